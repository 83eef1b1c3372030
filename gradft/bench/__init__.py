"""``make bench``: what a step, a cell and a metric cost, printed as numbers (never timed tests).

step.py     ``python -m gradft.bench``: step time, memory, passes and FLOP rate per method
cell.py     where one Table 1 cell's wall time goes, beside a plain peft loop
hvp.py      how far each H·v estimator is from the exact Hessian-vector product
metrics.py  how many gradient-metric points a run needs
scoring.py  multiple-choice candidate scoring with and without prefix reuse
"""

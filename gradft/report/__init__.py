"""Tables and figures from results.json files only: ``python -m gradft.report`` (build.py). Their statistics
(bootstrap CIs, paired tests, Holm's correction) are ``gradft.experiments.stats``.

build.py       collect results, write every table and figure of a root
table1.py      Table 1: per-method rows, paired tests against each baseline
answer.py      the short answer table (answer.md): both readings against every baseline, Holm-corrected
figure2.py     Figure 2: accuracy against the number of shots
figure3.py     Figure 3: the domain tasks
outcomes.py    final training loss, divergence counted (never dropped)
tuning.py      whether a tuning study could select: its noise against the differences it decided
guidance.py    issue 27's measurement of the guidance fix
estimators.py  the H·v estimator table of docs/guidance.md
"""

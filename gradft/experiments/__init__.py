"""Many runs: grids and Optuna sweeps over ``gradft.run.run``, the tuned grids they lead to, and their bookkeeping.

grid.py        ``python -m gradft.experiments.grid``: the cells of conf/experiment/<grid>.yaml, resumable
sweep.py       ``python -m gradft.experiments.sweep``: an Optuna study over run(), resumable, any SQLAlchemy storage
sweep_spec.py  the sweep yaml, checked before the first trial; samplers, pruners, storage
signal.py      tuning that can select: the objective's noise, λ = 0 control points, could a study select
resume.py      a stopped sweep loses no finished run: interrupted trials rerun, their finished runs reused
tuned.py       ``python -m gradft.experiments.tuned``: finished studies -> a tuned grid with fresh seeds
launch.py      the one launch path of grids and sweeps: a run's config, its (task, seed) cells, N workers
locks.py       one lock file per cell, safe across hosts and reboots
resultfile.py  whether a run folder holds a finished, valid result
eta.py         a grid's ETA from its finished cells
compute.py     ``python -m gradft.experiments.compute``: worker-hours spent on committed results
stats.py       bootstrap CIs, paired tests, Holm's correction (tuning's selection and the reports use them)
"""

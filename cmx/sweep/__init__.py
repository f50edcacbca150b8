"""Sweeps: YAML → a validated plan of runs (`plan.py`), its cost projected from measured rates
(`estimate.py`, reading finished runs in `rates.py`, probing unmeasured shapes in `probe.py`, a launched
sweep's ETA in `eta.py`), and the executors that train the plan: on this machine in slots (`local.py`)
or as a SLURM job array through submitit (`slurm.py`), behind one small interface (`executors.py`).

May import: cmx.run, cmx.store, cmx.augment, the bottom layer
"""

"""`cmx gpu-check`: the acceptance check of one CUDA GPU within a time budget (`check.py`, the driver), its
sections (`speed.py`, `profile.py`, `runs.py`), time caps (`budget.py`), the report (`report.py`) and the
pytest plugin that streams the cuda tests' results (`tests_plugin.py`).

May import: cmx.run, cmx.store, cmx.augment, cmx.bench, cmx.cifar, cmx.config, cmx.errors, cmx.files, cmx.paper
Never `sweep` (but as a child process: `cmx sweep`), `analysis` or `cli`.
"""

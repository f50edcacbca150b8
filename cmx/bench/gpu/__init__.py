"""`cmx gpu-check`: the acceptance check of one CUDA GPU within a time budget (`check.py`, the driver), its
sections (`speed.py`, `profile.py`, `runs.py`), time caps (`budget.py`), the report (`report.py`) and the
pytest plugin that streams the cuda tests' results (`tests_plugin.py`).

May import `cmx.run`, `cmx.augment`, `cmx.bench` and the bottom layer; never `sweep` (but as a child
process), `analysis` or `cli`.
"""

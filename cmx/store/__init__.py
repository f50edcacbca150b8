"""Persisting runs: the results directory (`resultsdir.py`: runs/, the runs.csv index, a run's state), the
claim that lets one process train a run (`claim.py`) and checkpoints (`checkpoint.py`).

May import `cmx.files` and `cmx.errors` (and torch, to serialise checkpoints); never `run`, `sweep`,
`analysis`, `bench` or `cli`.
"""

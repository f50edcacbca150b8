"""Persisting runs, below `run`: one run directory (`rundir.py`: `RunDir` knows every file of a run, writes them
atomically, reads them back, tells its state and takes its claim), the directory of runs and its runs.csv index
(`resultsdir.py`: `ResultsDir.run(run_id)` hands out RunDirs), the claim that lets one process train a run
(`claim.py`) and the serialising of checkpoints and final weights (`checkpoint.py`, the one user of torch).

Inside: rundir → claim, checkpoint; resultsdir → rundir; claim and checkpoint import no other store module.
Never `run`, `sweep`, `analysis`, `bench` or `cli`: a caller hands settings in as a dict (RunConfig.to_dict()).
May import: cmx.errors, cmx.files
"""

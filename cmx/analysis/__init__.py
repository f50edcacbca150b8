"""Reading results: collect run directories into a DataFrame (`collect.py`), match them to the paper's
rows (`cmx.paper`, `table.py`), test the paper's conclusions on them (`claims.py`, `stats.py`,
`findings.py`), plot them (`plot.py`), write REPORT.md (`report.py`) and watch runs live (`watch.py`).

Reads run directories only; never trains, so it needs the store but not the trainer.
May import: cmx.store, the bottom layer
"""

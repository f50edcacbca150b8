"""Reading results: collect run directories into a DataFrame (`collect.py`), match them to the paper's
rows (`paper.py`, `table.py`), test the paper's conclusions on them
(`claims.py`, `findings.py`), plot them (`plot.py`) and write REPORT.md (`report.py`).

Reads run directories only; never trains. May import `cmx.run` (config and results store) and
`cmx.errors`; never `sweep`, `bench` or `cli`.
"""

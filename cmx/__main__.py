"""`python -m cmx ...` — the same as the `cmx` console script (used by the sweep runner's subprocesses)."""
from .cli import run

run()

"""The `cmx` command line: the Typer app (`app.py`) and one module per command group.

Owns: parsing flags, printing, and mapping errors to exit codes. Every command is a thin wrapper over a
library function in `run`, `sweep`, `analysis` or `bench` (which tests call directly); nothing here is
imported by those packages. A command group that fails to import is an error, never a missing command.
May import: cmx.bench, cmx.analysis, cmx.sweep, cmx.run, cmx.store, cmx.augment, the bottom layer
"""
from . import analysis, bench, sweep
from .app import app, main, run

for _group in (sweep, analysis, bench):
    _group.register(app)

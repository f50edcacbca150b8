"""`python -m cmx.bench.gpu`: the GPU check (check.py), for a machine where only python3 has torch."""
from .check import main

raise SystemExit(main())

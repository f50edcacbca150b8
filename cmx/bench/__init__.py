"""`cmx bench`: speed of augmentation, the training step and evaluation, measured with the same engine the
training loop uses, optionally side by side with the reference pipeline (benchmarks/reference_pipeline.py).

May import `cmx.run`, `cmx.augment` and `cmx.sweep` (to project a sweep's cost); never `cli`.
"""

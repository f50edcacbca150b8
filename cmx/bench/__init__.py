"""`cmx bench` and `cmx gpu-check`: speed of augmentation, the training step and evaluation, measured with the
same engine the training loop uses (`speed.py`), optionally side by side with the reference pipeline
(`reference.py`: the public convmixer-cifar10 script's model and pipeline, the one copy of it in cmx); the
GPU acceptance check is the package `gpu/`.

May import: cmx.run, cmx.augment, cmx.sweep, cmx.store, cmx.cifar, cmx.config, cmx.errors, cmx.files, cmx.paper
(`cmx.sweep` to project a sweep's cost); never `cli` or `analysis`.
"""

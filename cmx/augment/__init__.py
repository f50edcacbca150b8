"""The paper's training augmentation as batched tensor functions, bit-exact with timm/Pillow on CPU.

Owns: crop/flip, RandAugment (as auditable tables), mixup/cutmix, normalisation and random erasing, and
the explicit random-number helpers they draw from (`rng.py`). Each op is a function of (batch, generator);
no global RNG. It knows nothing of runs, files or configs.
May import: cmx.cifar
"""

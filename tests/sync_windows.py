"""The windows in which the training loop must not synchronise with the host, as test hooks.

`cmx.run.train` reads from the device only every SYNC_EVERY steps and at the end of each epoch, in
`_check_finite` and right after it. `guard_steps` opens a window at the start of every step (the loop calls
`lr_at` once per step) and closes it when `_check_finite` is reached, so everything in between — the
chunk's augmentation, the forward and backward, AdamW, the on-device sums — runs inside a window. On CUDA
`open_`/`close` switch `torch.cuda.set_sync_debug_mode` between "error" and "default"; on CPU a test can pass
recorders to check where the windows fall.
"""
from __future__ import annotations

from cmx.run import train as train_module


def guard_steps(monkeypatch, open_, close, skip_steps: int = 1) -> dict:
    """Patch the loop's per-step and per-read hooks; returns counters {"steps", "opened", "reads"}.

    skip_steps: the first steps of the process stay outside any window: they do one-time work (cached
    device constants, cuDNN and cuBLAS handles) that may copy from the host once."""
    real_lr_at, real_check = train_module.lr_at, train_module._check_finite
    seen = {"steps": 0, "opened": 0, "reads": 0}

    def lr_at(*args):  # the start of a step
        seen["steps"] += 1
        if seen["steps"] > skip_steps:
            open_()
            seen["opened"] += 1
        return real_lr_at(*args)

    def check_finite(*args):  # the every-SYNC_EVERY read (and the epoch's last step)
        close()
        seen["reads"] += 1
        return real_check(*args)

    monkeypatch.setattr(train_module, "lr_at", lr_at)
    monkeypatch.setattr(train_module, "_check_finite", check_finite)
    return seen

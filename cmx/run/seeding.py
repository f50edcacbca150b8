"""The seeding rule of a run, written once: what `config.seed` seeds.

    model init    the global CPU generator seeded with `seed`, inside `torch.random.fork_rng`: the weights
                  are those of `torch.manual_seed(seed); build_model(config)` (built on the CPU), and the
                  process-wide RNG is left as it was found (only the CPU state is forked and seeded: no CUDA
                  context is created and no CUDA generator is touched)
    shuffle       a CPU generator seeded with `seed` (each epoch's permutation)
    augment       a generator on the training device seeded with `seed + 1` (every random augmentation draw)

The train loop, `cmx bench`, the sweep's probe and the CPU settings probe all take their seeds from here.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global RNG seeded with `seed` inside the block, and restored to what it was after it."""
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: the weights are drawn on the CPU (the model moves to its device after), and
        # torch.manual_seed would also reseed every CUDA generator, which fork_rng(devices=[]) does not restore
        torch.default_generator.manual_seed(seed)
        yield


def init_weights(seed: int, build: Callable[[], T]) -> T:
    """`build()` (a model constructor) with its initial weights drawn from `seed`; the global RNG untouched."""
    with seeded(seed):
        return build()


def run_generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """The run's explicit generators (saved in and restored from its checkpoints, store/checkpoint.py)."""
    return {"shuffle": torch.Generator().manual_seed(seed),
            "augment": torch.Generator(device=device).manual_seed(seed + 1)}

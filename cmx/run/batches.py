"""The training batches of one epoch: the shuffled images, augmented in chunks and handed out one step at a time.

Outside the train loop so that `cmx bench`, the sweep's probe and the GPU check time the very batches a run
trains on without importing the trainer.
"""
from __future__ import annotations

import torch

from ..augment.pipeline import augment_batches
from ..config import RunConfig
from .data import Cifar10

AUG_CHUNK_IMAGES = 1024  # augment this many training images per call (whole batches): see augment_batches


def aug_chunk_batches(batch_size: int, n_images: int) -> int:
    """Batches augmented per `augment_batches` call: about AUG_CHUNK_IMAGES images, at most the data."""
    return max(1, min(AUG_CHUNK_IMAGES, n_images) // batch_size)


class AugmentedChunks:
    """One epoch's training batches, augmented `chunk` batches per call and sliced out one step at a time.

    Why chunks: augmenting ~1,024 images per call keeps the per-call overhead small (see augment_batches).
    Chunks are aligned to the epoch's start, and the generator's state at a chunk's start is kept: a
    mid-epoch checkpoint stores that snapshot, so a resumed run re-augments the chunk (same numbers, same
    images) and continues at the saved step, bit-identical to a run that never stopped.
    """

    def __init__(self, data: Cifar10, config: RunConfig, generator: torch.Generator, steps: int):
        self.data, self.config, self.gen, self.steps = data, config, generator, steps
        self.bs = config.batch_size
        self.chunk = aug_chunk_batches(self.bs, data.train_x.shape[0])
        self.start_epoch(None)

    def start_epoch(self, order: torch.Tensor | None) -> None:
        """`order`: the epoch's permutation of the training images, on the device."""
        self.order, self.first, self.snapshot_at_first = order, -1, None
        self.x = self.targets = None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(augmented images (B, 3, 32, 32), soft targets (B, 10), true labels (B,)) of `step`."""
        if self.first < 0 or step >= self.first + self.chunk:
            self.first = step - step % self.chunk
            self.snapshot_at_first = self.gen.get_state()
            span = self.order[self.first * self.bs:min(self.first + self.chunk, self.steps) * self.bs]
            c = self.config
            self.x, self.targets = augment_batches(
                self.data.train_x.index_select(0, span), self.data.train_y[span], self.gen, self.bs,
                scaling=c.scaling, flip=c.flip, randaug=c.randaug, mixup=c.mixup, erasing=c.erasing)
        at = (step - self.first) * self.bs
        labels = self.data.train_y[self.order[step * self.bs:(step + 1) * self.bs]]
        return self.x[at:at + self.bs], self.targets[at:at + self.bs], labels

    def snapshot(self, step: int) -> torch.Tensor | None:
        """The generator state a checkpoint taken before `step` must hold: the chunk's start state when `step`
        lies in the chunk already augmented, else None (the generator's current state is right)."""
        return self.snapshot_at_first if self.first <= step < self.first + self.chunk else None

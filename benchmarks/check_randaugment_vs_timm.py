"""Compare cmx's batched RandAugment ops (and the random-resized-crop resampler) with timm's PIL ops.

For each of the 15 `rand-m9-mstd0.5-inc1` ops at a fixed magnitude and sign (and, for geometric ops, each
interpolation) both implementations transform the same real CIFAR-10 images; the script prints the mean
absolute pixel difference, the share of differing pixel values and the largest difference. Then it times
`augment_batch` (all stages on) on CPU, batch 128, 1 thread.

timm is not a cmx dependency: install the `bench` extra. Pillow >= 11 refuses posterize(bits=0); the script
restores the old behaviour (black image), which cmx implements explicitly.

usage: python benchmarks/check_randaugment_vs_timm.py [--data DIR] [--n 512] [--magnitude 9]

Measured (2 shared CPU cores, torch 2.14.1, Pillow 13.0.0, timm 1.x, 512 images of data_batch_1, m=9):
see the table printed by the script; summarised in the docstring of cmx/randaugment.py's module report.
"""
import argparse
import pickle
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import functional as TF

import timm.data.auto_augment as taa
from cmx import randaugment as ra
from cmx.augment import augment_batch, resized_crop

_post = ImageOps.posterize
ImageOps.posterize = lambda img, bits: _post(img, bits) if bits >= 1 else Image.new(img.mode, img.size)

GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
SIGNED = GEOMETRIC | {"ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}
FILL = (125, 123, 114)


def load(data: Path, n: int):
    with open(data / "data_batch_1", "rb") as fh:
        d = pickle.load(fh, encoding="latin1")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}  # str or bytes keys
    x = np.asarray(d["data"][:n], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return torch.from_numpy(x), torch.tensor(d["labels"][:n])


def timm_op(name, imgs, magnitude, sign, resample):
    """timm's AugmentOp after its random draws: level_fn(magnitude) with a fixed sign, then the PIL op."""
    taa._randomly_negate = (lambda v: v) if sign > 0 else (lambda v: -v)
    level_fn = taa.LEVEL_TO_ARG[name]
    args = level_fn(magnitude, dict(translate_pct=0.45)) if level_fn else ()
    out = [np.asarray(taa.NAME_TO_OP[name](Image.fromarray(im), *args, fillcolor=FILL, resample=resample))
           for im in imgs]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def report(label, ours, ref):
    diff = (ours.int() - ref.int()).abs().float()
    print(f"{label:<34} {diff.mean().item():8.4f} {100 * (diff > 0).float().mean().item():8.3f}% "
          f"{int(diff.max().item()):5d}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/work/shared/data/cifar10-mini/cifar-10-batches-py", type=Path)
    p.add_argument("--n", default=512, type=int)
    p.add_argument("--magnitude", default=9.0, type=float)
    a = p.parse_args()
    torch.set_num_threads(1)
    x, y = load(a.data, a.n)
    imgs = x.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3) for PIL

    print(f"{a.n} CIFAR images, magnitude {a.magnitude}")
    print(f"{'op (sign, interpolation)':<34} {'mean|d|':>8} {'differ':>9} {'max':>5}")
    for name in ra.RAND_INCREASING_OPS:
        signs = (1, -1) if name in SIGNED else (1,)
        interps = ((False, Image.BILINEAR), (True, Image.BICUBIC)) if name in GEOMETRIC else ((False, None),)
        for sign in signs:
            for bicubic, resample in interps:
                ref = timm_op(name, imgs, a.magnitude, sign, resample or Image.BILINEAR)
                ours = ra.apply_op(name, x, a.magnitude, sign, bicubic, FILL)
                label = f"{name} ({'+' if sign > 0 else '-'}{', bicubic' if bicubic else ', bilinear' if resample else ''})"
                report(label, ours, ref)
    # the magnitude-10 corner: Posterize to 0 bits (black), Solarize threshold 0 (full inversion)
    for name in ("PosterizeIncreasing", "SolarizeIncreasing"):
        report(f"{name} (m=10)", ra.apply_op(name, x, 10.0), timm_op(name, imgs, 10.0, 1, Image.BILINEAR))

    # random-resized-crop resampling: fixed boxes, both interpolations, against torchvision's PIL path
    g = torch.Generator().manual_seed(0)
    from cmx.augment import sample_crop_boxes
    top, left, h, w = sample_crop_boxes(g, a.n, 32, 32)
    for bicubic, mode in ((False, TF.InterpolationMode.BILINEAR), (True, TF.InterpolationMode.BICUBIC)):
        ref = [np.asarray(TF.resized_crop(Image.fromarray(im), int(t), int(l), int(hh), int(ww), [32, 32], mode))
               for im, t, l, hh, ww in zip(imgs, top, left, h, w)]
        ref = torch.from_numpy(np.stack(ref)).permute(0, 3, 1, 2)
        report(f"ResizedCrop ({'bicubic' if bicubic else 'bilinear'})", resized_crop(x, top, left, h, w, bicubic), ref)

    # throughput of the whole pipeline
    gen = torch.Generator().manual_seed(0)
    xb, yb = x[:128].contiguous(), y[:128]
    for _ in range(3):
        augment_batch(xb, yb, gen)
    reps, t0 = 20, time.perf_counter()
    for _ in range(reps):
        augment_batch(xb, yb, gen)
    dt = (time.perf_counter() - t0) / reps
    print(f"augment_batch (all on), CPU, 1 thread, batch 128: {dt * 1e3:.1f} ms/batch = {128 / dt:,.0f} img/s")


if __name__ == "__main__":
    main()

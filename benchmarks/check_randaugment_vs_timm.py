"""Compare cmx's batched RandAugment ops (and the random-resized-crop resampler) with timm's PIL ops.

For each of the 15 `rand-m9-mstd0.5-inc1` ops at a fixed magnitude and sign (and, for geometric ops, each
interpolation) both implementations transform the same real CIFAR-10 images; the script prints the mean
absolute pixel difference, the share of differing pixel values and the largest difference. Then it times
`augment_batch` (all stages on) on CPU, batch 128, 1 thread.

timm is not a cmx dependency: install the `bench` extra. Pillow >= 11 refuses posterize(bits=0); the script
restores the old behaviour (black image), which cmx implements explicitly.

usage: python benchmarks/check_randaugment_vs_timm.py [--data DIR] [--n 512] [--magnitude 9]
       (DIR: a CIFAR-10 folder; default $CMX_DATA or data/, as cmx train)

Measured (torch 2.14.1, Pillow 13.0.0, 512 images of the mini set's data_batch_1):
- every op, both signs, both interpolations: mean |d| 0.0000, 0.000% pixels differ, max 0, at magnitude 9,
  and also at 0.7, 4.3, 9.87 and 10 (the m=10 rows cover Posterize to 0 bits and Solarize at 0);
  ResizedCrop against torchvision's PIL resized_crop: identical too.
- augment_batch (all on), CPU, 1 thread, batch 128: best 20.2-21.8 ms/batch ≈ 5,900-6,300 img/s; timm's
  per-image PIL transforms + Mixup on the same machine: ≈ 3,800 img/s. The 2 cores were shared with other
  jobs (load average 3.5-4.9), so timings are indicative.
"""
import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import functional as TF

import timm.data.auto_augment as taa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmx.augment import randaugment as ra  # noqa: E402
from cmx.augment.pipeline import augment_batch, resized_crop  # noqa: E402
from cmx.cifar import TRAIN_FILES, batches_dir  # noqa: E402
from cmx.config import RunConfig  # noqa: E402

_post = ImageOps.posterize
ImageOps.posterize = lambda img, bits: _post(img, bits) if bits >= 1 else Image.new(img.mode, img.size)

GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
SIGNED = GEOMETRIC | {"ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}
FILL = (125, 123, 114)


def load(data: Path, n: int):
    """The first n images of the first training batch file."""
    with open(batches_dir(data) / TRAIN_FILES[0], "rb") as fh:
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
    p.add_argument("--data", type=Path, help="CIFAR-10 folder [default: $CMX_DATA or data/, as cmx train]")
    p.add_argument("--n", default=512, type=int)
    p.add_argument("--magnitude", default=9.0, type=float)
    a = p.parse_args()
    a.data = a.data or Path(RunConfig().data)
    if not (batches_dir(a.data) / TRAIN_FILES[0]).is_file():
        p.error(f"no CIFAR-10 training batch in {a.data} (pass --data DIR or set $CMX_DATA)")
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
                interp = ", bicubic" if bicubic else ", bilinear" if resample else ""
                label = f"{name} ({'+' if sign > 0 else '-'}{interp})"
                report(label, ours, ref)
    # the magnitude-10 corner: Posterize to 0 bits (black), Solarize threshold 0 (full inversion)
    for name in ("PosterizeIncreasing", "SolarizeIncreasing"):
        report(f"{name} (m=10)", ra.apply_op(name, x, 10.0), timm_op(name, imgs, 10.0, 1, Image.BILINEAR))

    # random-resized-crop resampling: fixed boxes, both interpolations, against torchvision's PIL path
    g = torch.Generator().manual_seed(0)
    from cmx.augment.pipeline import sample_crop_boxes
    top, left, h, w = sample_crop_boxes(g, a.n, 32, 32)
    for bicubic, mode in ((False, TF.InterpolationMode.BILINEAR), (True, TF.InterpolationMode.BICUBIC)):
        ref = [np.asarray(TF.resized_crop(Image.fromarray(im), int(t), int(l), int(hh), int(ww), [32, 32], mode))
               for im, t, l, hh, ww in zip(imgs, top, left, h, w)]
        ref = torch.from_numpy(np.stack(ref)).permute(0, 3, 1, 2)
        report(f"ResizedCrop ({'bicubic' if bicubic else 'bilinear'})", resized_crop(x, top, left, h, w, bicubic), ref)

    # throughput of the whole pipeline: best and median of several rounds (the machine may be shared)
    gen = torch.Generator().manual_seed(0)
    xb, yb = x[:128].contiguous(), y[:128]
    print(f"augment_batch (all on), CPU, 1 thread, batch 128: {throughput(lambda: augment_batch(xb, yb, gen))}")
    from timm.data import Mixup, create_transform
    t = create_transform(32, is_training=True, scale=(0.75, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
                         auto_augment="rand-m9-mstd0.5-inc1", interpolation="random",
                         mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616), re_prob=0.25,
                         re_mode="pixel", re_count=1)
    mix = Mixup(mixup_alpha=0.5, cutmix_alpha=0.5, label_smoothing=0.1, num_classes=10)
    pil = [Image.fromarray(im) for im in imgs[:128]]
    print(f"timm per-image PIL transforms + Mixup (reference), 1 thread, batch 128: "
          f"{throughput(lambda: mix(torch.stack([t(im) for im in pil]), yb), rounds=3)}")


def throughput(fn, rounds=5, per_round=5, batch=128):
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn()
        times.append((time.perf_counter() - t0) / per_round)
    best, median = min(times), sorted(times)[len(times) // 2]
    return f"best {best * 1e3:.1f} ms/batch = {batch / best:,.0f} img/s (median {batch / median:,.0f} img/s)"


if __name__ == "__main__":
    main()

"""The paper's training augmentation (timm's CIFAR recipe) on whole batches, on the batch's device.

`augment_batch` is the one place that states the order:
    random-resized-crop → flip → RandAugment (uint8) → mixup/cutmix (float 0-255) → normalise → erasing.
Each stage is a function of (batch, generator) → batch with per-image randomness from vectorised parameters
and masks, never the global RNG; random numbers are drawn on the generator's device (see randaugment.py).
Nothing in the per-batch path reads a value back to the host.

Where timm runs per image in PIL, the semantics are timm's: RandomResizedCropAndInterpolation's 10 attempts
and centre-crop fallback with Pillow's two-pass resampling (bilinear or bicubic per image); Mixup in "batch"
mode (one λ, partner = reversed batch, rand_bbox with λ correction, label smoothing folded in);
RandomErasing "pixel" mode with its 10 attempts, on the normalised batch.

Two choices where timm has two behaviours: mixup mixes the float batch without rounding back to uint8
(timm's collate rounds; its non-prefetcher Mixup on normalised tensors does not, and normalising commutes
with mixing), and erasing runs after mixing, as in timm's prefetcher path (without the prefetcher timm
erases per image before mixing).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import MEAN, STD
from .randaugment import device_constant, normal, rand_augment, uniform

Tensor = torch.Tensor
_PRECISION_BITS = 22  # Pillow's fixed-point resampling coefficients (Resample.c)


# ---------------------------------------------------------------------- random resized crop
def sample_crop_boxes(gen: torch.Generator, n: int, height: int, width: int, scale=(0.75, 1.0),
                      ratio=(3 / 4, 4 / 3), device="cpu"):
    """timm's RandomResizedCropAndInterpolation.get_params for n images → (top, left, h, w), (n,) long each.

    10 attempts per image; the first whose rounded w, h fit is used; else the centre-crop fallback.
    """
    u = uniform(gen, (n, 10, 4), device).double()
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    target_area = (scale[0] + (scale[1] - scale[0]) * u[..., 0]) * (height * width)
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * u[..., 1])
    w = torch.sqrt(target_area * aspect).round()  # round half to even, as Python's round()
    h = torch.sqrt(target_area / aspect).round()
    fits = (w <= width) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # first fitting attempt (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    top = (u[..., 2].gather(1, first).squeeze(1) * (height - h + 1)).floor()  # random.randint(0, H - h)
    left = (u[..., 3].gather(1, first).squeeze(1) * (width - w + 1)).floor()
    # fallback: centre crop clamped to the ratio range (whole image for square inputs)
    in_ratio = width / height
    fw, fh = width, height
    if in_ratio < min(ratio):
        fh = int(round(fw / min(ratio)))
    elif in_ratio > max(ratio):
        fw = int(round(fh * max(ratio)))
    ok = fits.any(1)
    top = torch.where(ok, top, float((height - fh) // 2))
    left = torch.where(ok, left, float((width - fw) // 2))
    h, w = torch.where(ok, h, float(fh)), torch.where(ok, w, float(fw))
    return top.long(), left.long(), h.long(), w.long()


def _pil_filter(d: Tensor, bicubic: Tensor) -> Tensor:
    """Resample.c filters: bilinear (support 1) and bicubic a = −0.5 (support 2)."""
    a = -0.5
    d = d.abs()
    cubic = torch.where(d < 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                        torch.where(d < 2, (((d - 5) * d + 8) * d - 4) * a, 0.0))
    return torch.where(bicubic, cubic, (1 - d).clamp(min=0))


def _resample_matrix(start: Tensor, length: Tensor, size: int, bicubic: Tensor) -> Tensor:
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for resizing the span [start, start + length)
    of each image to `size` pixels, as dense (n, size out, size in) float64 matrices of fixed-point
    integer weights (weight · 2^22, rounded half away from zero).

    Crops are never larger than the output, so the filter is not widened and at most 5 taps are used.
    """
    n, dev = start.shape[0], start.device
    scale = (length.double() / size).view(-1, 1)
    support = torch.where(bicubic, 2.0, 1.0).double().view(-1, 1)
    centre = (torch.arange(size, device=dev, dtype=torch.float64) + 0.5) * scale  # (n, out)
    xmin = (centre - support + 0.5).trunc().clamp(min=0)
    xmax = torch.minimum((centre + support + 0.5).trunc(), length.double().view(-1, 1))
    x = xmin.unsqueeze(-1) + torch.arange(5, device=dev)  # (n, out, 5) taps, crop coordinates
    weight = _pil_filter(x - centre.unsqueeze(-1) + 0.5, bicubic.view(-1, 1, 1)) * (x < xmax.unsqueeze(-1))
    weight = weight / weight.sum(-1, keepdim=True)
    fixed = (weight.abs() * (1 << _PRECISION_BITS) + 0.5).floor() * weight.sign()
    index = start.view(-1, 1, 1) + torch.minimum(x, length.view(-1, 1, 1) - 1.0).long()  # image coordinates
    return torch.zeros(n, size, size, dtype=torch.float64, device=dev).scatter_add_(2, index, fixed)


def _round_fixed(acc: Tensor) -> Tensor:
    """(acc + 2^21) >> 22, clipped to 8 bits; exact because acc holds integers below 2^31."""
    return acc.add_(1 << (_PRECISION_BITS - 1)).mul_(2.0 ** -_PRECISION_BITS).floor_().clamp_(0, 255)


def resized_crop(x: Tensor, top: Tensor, left: Tensor, h: Tensor, w: Tensor, bicubic) -> Tensor:
    """PIL img.crop(box).resize((W, H), bilinear|bicubic) for each image, bit-exact: horizontal pass,
    round to 8 bits, vertical pass, as Pillow's two-pass fixed-point resampler.

    The passes are float64 matmuls of integer pixels with integer weights: every partial sum is an integer
    below 2^31, so the result is exact whatever the summation order (and TF32 settings do not apply).
    Why not roi_align / grid_sample: neither reproduces Pillow (no bicubic in roi_align; grid_sample's
    bicubic is a = −0.75 and it does not renormalise weights at the crop edge). Measured on CPU, 1 thread,
    batch 128 (shared machine, best of rounds): roi_align (sampling_ratio 1) ≈ 2.4 ms, grid_sample bilinear
    ≈ 2.4 ms / bicubic ≈ 4.6 ms, this ≈ 7 ms; on a GPU all are negligible.
    """
    n, _, height, width = x.shape
    if not torch.is_tensor(bicubic):
        bicubic = torch.full((n,), bicubic, device=x.device)
    wx = _resample_matrix(left, w, width, bicubic)  # (n, W out, W in)
    wy = _resample_matrix(top, h, height, bicubic)  # (n, H out, H in)
    tmp = _round_fixed(torch.bmm(x.double().view(n, -1, width), wx.transpose(1, 2)))  # (n, 3·H, W)
    tmp = tmp.view(n, 3, height, width).transpose(1, 2).reshape(n, height, 3 * width)  # rows first
    out = _round_fixed(torch.bmm(wy, tmp))  # (n, H, 3·W)
    return out.view(n, height, 3, width).transpose(1, 2).to(torch.uint8)


def random_resized_crop(x: Tensor, gen: torch.Generator, scale=(0.75, 1.0), ratio=(3 / 4, 4 / 3)) -> Tensor:
    """timm RandomResizedCropAndInterpolation(size=(H, W), scale, ratio, interpolation="random") per image.
    x: (B, 3, H, W) uint8 → same."""
    n, _, height, width = x.shape
    top, left, h, w = sample_crop_boxes(gen, n, height, width, scale, ratio, x.device)
    bicubic = uniform(gen, (n,), x.device) < 0.5  # random.choice((BILINEAR, BICUBIC))
    return resized_crop(x, top, left, h, w, bicubic)


# ---------------------------------------------------------------------- flip, normalise
def hflip(x: Tensor, gen: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability p."""
    flip = uniform(gen, (x.shape[0],), x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def normalize(x: Tensor) -> Tensor:
    """uint8 (or float on the 0-255 scale) → float32 (x/255 − mean)/std with the CIFAR-10 statistics."""
    mean = device_constant(MEAN, x.device, torch.float32).view(1, 3, 1, 1)
    std = device_constant(STD, x.device, torch.float32).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


# ---------------------------------------------------------------------- mixup / cutmix
def _gamma(gen: torch.Generator, alpha: float, shape, device, candidates: int = 16) -> Tensor:
    """Gamma(alpha, 1) from the generator: Marsaglia–Tsang, vectorised over `candidates` proposals (the
    first accepted is used; acceptance is > 95% each, so all failing has probability < 1e-20), with the
    U^(1/alpha) boost for alpha < 1. float64."""
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = normal(gen, (*shape, candidates), device).double()
    u = uniform(gen, (*shape, candidates), device).double()
    v = (1.0 + c * z) ** 3
    ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp(min=1e-300)))
    g = (d * v).gather(-1, ok.int().argmax(-1, keepdim=True)).squeeze(-1)
    g = torch.where(ok.any(-1), g, d)  # never taken in practice; keeps the value positive
    if alpha < 1.0:
        g = g * uniform(gen, shape, device).double().clamp(min=1e-300) ** (1.0 / alpha)
    return g


def sample_beta(gen: torch.Generator, alpha: float, shape=(), device="cpu") -> Tensor:
    """Beta(alpha, alpha) as a ratio of two Gammas (torch.distributions takes no generator)."""
    g1, g2 = _gamma(gen, alpha, shape, device), _gamma(gen, alpha, shape, device)
    return g1 / (g1 + g2)


def sample_mix_params(gen: torch.Generator, height: int, width: int, device="cpu", mixup_alpha: float = 0.5,
                      cutmix_alpha: float = 0.5, switch_prob: float = 0.5):
    """timm Mixup._params_per_batch + cutmix_bbox_and_lam (prob 1.0), as 0-d tensors on `device`.

    Returns (use_cutmix, lam, (yl, yh, xl, xh)): lam is already corrected to the clipped box area when
    cutmix is used; the box is timm's rand_bbox (side sqrt(1 − λ), centre uniform, clipped).
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError("mixup_cutmix needs mixup_alpha > 0 or cutmix_alpha > 0")
    u = uniform(gen, (3,), device).double()
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = u[0] < switch_prob
    else:
        use_cutmix = torch.full((), cutmix_alpha > 0, device=device)
    lam_mix = sample_beta(gen, mixup_alpha, (), device) if mixup_alpha > 0 else torch.ones((), device=device)
    lam_cut = sample_beta(gen, cutmix_alpha, (), device) if cutmix_alpha > 0 else torch.ones((), device=device)
    ratio = torch.sqrt(1.0 - lam_cut.double())
    cut_h, cut_w = (height * ratio).trunc().long(), (width * ratio).trunc().long()
    cy, cx = (u[1] * height).floor().long(), (u[2] * width).floor().long()  # np.random.randint(0, H)
    yl, yh = (cy - cut_h // 2).clamp(0, height), (cy + (cut_h + 1) // 2).clamp(0, height)
    xl, xh = (cx - cut_w // 2).clamp(0, width), (cx + (cut_w + 1) // 2).clamp(0, width)
    lam_box = 1.0 - ((yh - yl) * (xh - xl)).double() / (height * width)
    lam = torch.where(use_cutmix, lam_box, lam_mix.double())
    return use_cutmix, lam, (yl, yh, xl, xh)


def smooth_targets(y: Tensor, num_classes: int = 10, smoothing: float = 0.1) -> Tensor:
    """One-hot with label smoothing: on = 1 − s + s/C, off = s/C (timm's one_hot / mixup_target)."""
    off = smoothing / num_classes
    return torch.full((y.shape[0], num_classes), off, device=y.device).scatter_(
        1, y.long().view(-1, 1), 1.0 - smoothing + off)


def mixup_cutmix(x: Tensor, y: Tensor, gen: torch.Generator, num_classes: int = 10, mixup_alpha: float = 0.5,
                 cutmix_alpha: float = 0.5, switch_prob: float = 0.5, label_smoothing: float = 0.1):
    """timm Mixup(mode="batch", prob=1.0): one λ for the batch, each image mixed with its mirror in the
    batch order (x.flip(0)). x: (B, C, H, W) float → (mixed x, soft targets (B, num_classes) float32)."""
    use_cutmix, lam, (yl, yh, xl, xh) = sample_mix_params(gen, x.shape[2], x.shape[3], x.device, mixup_alpha,
                                                          cutmix_alpha, switch_prob)
    partner = x.flip(0)
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    box = ((rows >= yl) & (rows < yh)).view(-1, 1) & ((cols >= xl) & (cols < xh)).view(1, -1)  # (H, W)
    lam32 = lam.float()
    mixed = torch.where(use_cutmix, torch.where(box, partner, x), x * lam32 + partner * (1.0 - lam32))
    y1 = smooth_targets(y, num_classes, label_smoothing)
    return mixed, y1 * lam32 + y1.flip(0) * (1.0 - lam32)


# ---------------------------------------------------------------------- random erasing
def sample_erase_boxes(gen: torch.Generator, n: int, height: int, width: int, p: float = 0.25,
                       area=(0.02, 1 / 3), aspect=(0.3, 1 / 0.3), device="cpu"):
    """timm RandomErasing._erase parameters (count 1) → (erase (n,) bool, top, left, h, w (n,) long).

    An image is erased with prob p if one of 10 attempts gives a box strictly smaller than the image."""
    u = uniform(gen, (n, 41), device).double()
    att = u[:, 1:].view(n, 10, 4)
    log_a = (math.log(aspect[0]), math.log(aspect[1]))
    target_area = (area[0] + (area[1] - area[0]) * att[..., 0]) * (height * width)
    ar = torch.exp(log_a[0] + (log_a[1] - log_a[0]) * att[..., 1])
    h = torch.sqrt(target_area * ar).round()
    w = torch.sqrt(target_area / ar).round()
    fits = (w < width) & (h < height)
    first = fits.int().argmax(1, keepdim=True)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    top = (att[..., 2].gather(1, first).squeeze(1) * (height - h + 1)).floor()
    left = (att[..., 3].gather(1, first).squeeze(1) * (width - w + 1)).floor()
    erase = (u[:, 0] <= p) & fits.any(1)  # timm returns early when random() > p
    return erase, top.long(), left.long(), h.long(), w.long()


def random_erasing(x: Tensor, gen: torch.Generator, p: float = 0.25, area=(0.02, 1 / 3),
                   aspect=(0.3, 1 / 0.3)) -> Tensor:
    """timm RandomErasing(p, mode="pixel", count 1) on a normalised float batch: each erased box gets
    per-pixel N(0, 1) noise."""
    n, c, height, width = x.shape
    erase, top, left, h, w = sample_erase_boxes(gen, n, height, width, p, area, aspect, x.device)
    rows = torch.arange(height, device=x.device).view(1, -1)
    cols = torch.arange(width, device=x.device).view(1, -1)
    in_rows = (rows >= top.view(-1, 1)) & (rows < (top + h).view(-1, 1))  # (n, H)
    in_cols = (cols >= left.view(-1, 1)) & (cols < (left + w).view(-1, 1))  # (n, W)
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1) & erase.view(-1, 1, 1)).unsqueeze(1)
    noise = normal(gen, (n, c, height, width), x.device).to(x.dtype)
    return torch.where(mask, noise, x)


# ---------------------------------------------------------------------- the pipeline
def augment_batch(x: Tensor, y: Tensor, gen: torch.Generator, *, scaling: bool = True, flip: bool = True,
                  randaug: bool = True, mixup: bool = True, erasing: bool = True, num_classes: int = 10):
    """The training augmentation, in timm's order. x: (B, 3, H, W) uint8, y: (B,) int.

    Returns (normalised float32 batch (B, 3, H, W), soft targets (B, num_classes) float32 with label
    smoothing 0.1, mixed when mixup is on). Each flag turns one Table 7 stage off.
    """
    return augment_batches(x, y, gen, x.shape[0], scaling=scaling, flip=flip, randaug=randaug, mixup=mixup,
                           erasing=erasing, num_classes=num_classes)


def augment_batches(x: Tensor, y: Tensor, gen: torch.Generator, batch_size: int, *, scaling: bool = True,
                    flip: bool = True, randaug: bool = True, mixup: bool = True, erasing: bool = True,
                    num_classes: int = 10):
    """`augment_batch` for several consecutive training batches at once (x holds them back to back).

    Why: every stage but mixup is per image, so it runs once over the whole chunk; on CPU RandAugment's 30
    op dispatches then cover ~1000 images instead of 128 and the chunk augments ~1.7× faster (RESULTS.md).
    Mixup/CutMix stays per batch (one λ per batch, partner = that batch reversed), exactly as with
    `augment_batch`, which is this function with one batch.
    """
    if x.shape[0] % batch_size:
        raise ValueError(f"{x.shape[0]} images are not a whole number of batches of {batch_size}")
    if scaling:
        x = random_resized_crop(x, gen)
    if flip:
        x = hflip(x, gen)
    if randaug:
        x = rand_augment(x, gen)
    xf = x.float()  # 0-255 scale
    if mixup:
        mixed = [mixup_cutmix(xb, yb, gen, num_classes) for xb, yb in zip(xf.split(batch_size), y.split(batch_size))]
        xf, targets = (mixed[0] if len(mixed) == 1 else
                       (torch.cat([m[0] for m in mixed]), torch.cat([m[1] for m in mixed])))
    else:
        targets = smooth_targets(y, num_classes)
    xf = normalize(xf)
    if erasing:
        xf = random_erasing(xf, gen)
    return xf, targets


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """timm SoftTargetCrossEntropy: mean over the batch of −Σ targets · log_softmax(logits)."""
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()

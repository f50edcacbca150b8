"""The paper's training augmentation (timm's CIFAR recipe) on whole batches, on the batch's device.

`augment_batches` is the one place that states the order:
    random-resized-crop (+ flip) → RandAugment (uint8) → normalise → mixup/cutmix (per batch) → erasing.
Each stage is a function of (batch, generator) → batch with per-image randomness from vectorised parameters
and masks, never the global RNG; random numbers are drawn on the generator's device (see randaugment.py).

Dispatch (randaugment.resolve_dispatch): on CPU the stages read their own random choices on the host (free
there) and compute only what was drawn; elsewhere ("mask") every alternative is computed and torch.where
keeps the drawn one, so nothing in the per-batch path reads a value back from a GPU.

Where timm runs per image in PIL, the semantics are timm's: RandomResizedCropAndInterpolation's 10 attempts
and centre-crop fallback with Pillow's two-pass resampling (bilinear or bicubic per image, bit-exact);
Mixup in "batch" mode (one λ, partner = reversed batch, rand_bbox with λ correction, label smoothing folded
in); RandomErasing "pixel" mode with its 10 attempts, on the normalised batch.

Two choices where timm has two behaviours: mixup mixes the float batch without rounding back to uint8
(timm's collate rounds; its non-prefetcher Mixup on normalised tensors does not; normalising commutes with
mixing, so mixing the normalised batch equals normalising the mixed one up to float32 rounding), and
erasing runs after mixing, as in timm's prefetcher path (without the prefetcher timm erases per image
before mixing).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..cifar import MEAN, STD
from .randaugment import rand_augment
from .rng import device_constant, normal, resolve_dispatch, uniform

Tensor = torch.Tensor
_PRECISION_BITS = 22  # Pillow's fixed-point resampling coefficients (Resample.c)
_CROP_BLOCK = 128  # CPU: images per resampling block, so each pass's float32 temporaries stay in cache


# ---------------------------------------------------------------------- random resized crop
def sample_crop_boxes(gen: torch.Generator, n: int, height: int, width: int, *, scale=(0.75, 1.0),
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


def _resample_taps(start: Tensor, length: Tensor, size: int, bicubic: Tensor,
                   mirror: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for resizing the span [start, start + length)
    of each image to `size` pixels → (input pixel index, integer weight), each (n, size out, 5): Pillow's
    fixed-point weights (weight · 2^22 rounded half away from zero), as float64 integers. `mirror` (n,)
    bool reverses the output order of those images (a left-right flip, for free).

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
    if mirror is not None:
        m = mirror.view(-1, 1, 1)
        index, fixed = torch.where(m, index.flip(1), index), torch.where(m, fixed.flip(1), fixed)
    return index, fixed


def _dense(index: Tensor, values: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """Taps → dense (n, out, size) matrices (zero-weight taps may repeat an index: they add nothing)."""
    return torch.zeros(*index.shape[:2], size, dtype=dtype, device=index.device).scatter_add_(
        2, index, values.to(dtype))


def _exact_float32(device: torch.device) -> bool:
    """Whether `_resample_pass` may use its float32 form: CPU matmuls at "highest" precision (true IEEE
    float32; "high"/"medium" may use bf16 or TF32 internally, and CUDA is kept on the float64 form)."""
    return device.type == "cpu" and torch.get_float32_matmul_precision() == "highest"


def _pass_weights(index: Tensor, fixed: Tensor, size: int) -> tuple[Tensor, ...]:
    """Dense (n, out, size) weight matrices for `_resample_pass`: (weights / 2^22,) in float64, or for the
    float32 form (hi / 2^11, lo / 2^11) with fixed = hi·2^11 + lo, |lo| ≤ 2^10 (both exact in float32)."""
    if not _exact_float32(index.device):
        return (_dense(index, fixed * 2.0 ** -_PRECISION_BITS, size, torch.float64),)
    hi = torch.round(fixed / 2048.0)
    return (_dense(index, hi / 2048.0, size, torch.float32),
            _dense(index, (fixed - hi * 2048.0) / 2048.0, size, torch.float32))


def _resample_pass(weights: tuple[Tensor, ...], pixels: Tensor, pixels_first: bool) -> Tensor:
    """One Pillow pass, exactly: clip8((Σ pixel·weight + 2^21) >> 22) for Pillow's integer weights.

    pixels_first: pixels (n, M, K) @ weightsᵀ → (n, M, out); else weights @ pixels (n, K, M) → (n, out, M).
    In float64 with weights/2^22 every partial sum is an integer times 2^-22 below 2^9: exact in any order.
    On CPU (at "highest" matmul precision) float32 matmuls are ~3.5× faster, and exact too when each weight is
    split as hi·2^11 + lo with |lo| ≤ 2^10: the products p·hi and p·lo then need ≤ 21 bits. With
    A = Σ p·hi/2^11 = q/2^11 and B = Σ p·lo/2^22, floor(A + B + ½) = floor((q + floor((B + ½)·2^11)) / 2^11)
    (q is an integer, so the dropped fraction cannot carry), and every step is exact in float32.
    """
    def matmul(w: Tensor, p: Tensor) -> Tensor:
        return torch.bmm(p, w.transpose(1, 2)) if pixels_first else torch.bmm(w, p)

    if len(weights) == 1:
        half = torch.full((1, 1, 1), 0.5, dtype=torch.float64, device=pixels.device)
        w, p = weights[0], pixels.double()
        out = torch.baddbmm(half, p, w.transpose(1, 2)) if pixels_first else torch.baddbmm(half, w, p)
        return out.floor_().clamp_(0, 255)
    pixels = pixels.float()
    a, b = matmul(weights[0], pixels), matmul(weights[1], pixels)  # A and B·2^11
    return a.add_(b.add_(1024.0).floor_(), alpha=1.0 / 2048.0).floor_().clamp_(0, 255)


def resized_crop(x: Tensor, top: Tensor, left: Tensor, h: Tensor, w: Tensor, bicubic, *,
                 mirror: Tensor | None = None) -> Tensor:
    """PIL img.crop(box).resize((W, H), bilinear|bicubic) for each image, bit-exact: horizontal pass,
    round to 8 bits, vertical pass, as Pillow's two-pass fixed-point resampler. `mirror` (n,) bool also
    flips those images left-right, for free (their horizontal taps are reversed).

    Each pass is a batched matmul of integer pixels with Pillow's integer weights (`_resample_pass` says why
    it is exact). The image is laid out rows-first (n, H, 3, W) so that both passes are plain batched
    matmuls with no copy between them. On CPU the matmuls run on blocks of _CROP_BLOCK images, whose
    float32 temporaries stay in cache (1,024 images, 2 threads: 19.5 µs/image unblocked, 16.5 in blocks of 128).
    Why not roi_align / grid_sample: neither reproduces Pillow (no bicubic in roi_align; grid_sample's
    bicubic is a = −0.75 and it does not renormalise weights at the crop edge).
    """
    n, _, height, width = x.shape
    if not torch.is_tensor(bicubic):
        bicubic = torch.full((n,), bicubic, device=x.device)
    wx = _pass_weights(*_resample_taps(left, w, width, bicubic, mirror), width)  # (n, W out, W in) each
    wy = _pass_weights(*_resample_taps(top, h, height, bicubic), height)  # (n, H out, H in) each
    rows = x.transpose(1, 2).reshape(n, 3 * height, width)  # (n, H·3, W in), rows first
    out = torch.empty_like(x)
    block = _CROP_BLOCK if x.device.type == "cpu" else n
    for i in range(0, n, block):
        part = slice(i, i + block)
        tmp = _resample_pass([m[part] for m in wx], rows[part], pixels_first=True)  # (b, H in·3, W out)
        tmp = _resample_pass([m[part] for m in wy], tmp.view(tmp.shape[0], height, 3 * width), pixels_first=False)
        out[part] = tmp.view(-1, height, 3, width).transpose(1, 2)  # values 0..255: truncation is the floor
    return out


def random_resized_crop(x: Tensor, gen: torch.Generator, scale=(0.75, 1.0), ratio=(3 / 4, 4 / 3),
                        flip_p: float | None = None) -> Tensor:
    """timm RandomResizedCropAndInterpolation(size=(H, W), scale, ratio, interpolation="random") per image.
    x: (B, 3, H, W) uint8 → same. With `flip_p`, also timm's RandomHorizontalFlip(flip_p), folded into the
    resampling: the same random draws in the same order, and the same pixels, as `hflip` afterwards."""
    n, _, height, width = x.shape
    top, left, h, w = sample_crop_boxes(gen, n, height, width, scale=scale, ratio=ratio, device=x.device)
    bicubic = uniform(gen, (n,), x.device) < 0.5  # random.choice((BILINEAR, BICUBIC))
    mirror = None if flip_p is None else uniform(gen, (n,), x.device) < flip_p
    return resized_crop(x, top, left, h, w, bicubic, mirror=mirror)


# ---------------------------------------------------------------------- flip, normalise
def hflip(x: Tensor, gen: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability p."""
    flip = uniform(gen, (x.shape[0],), x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


_NORM_SCALE = tuple(1.0 / (255.0 * s) for s in STD)  # (x/255 − mean)/std = x·scale + shift, in float64
_NORM_SHIFT = tuple(-m / s for m, s in zip(MEAN, STD))


def normalize(x: Tensor, out: Tensor | None = None) -> Tensor:
    """uint8 (or float on the 0-255 scale) → float32 (x/255 − mean)/std with the CIFAR-10 statistics, as
    x·scale + shift in place on a float32 copy (into `out` if given): 2 passes after the conversion, where
    the four-step formula takes 4 and a uint8 addcmul takes the slow mixed-dtype path (measured 2.4× slower).
    Equal to the four-step formula within float32 rounding."""
    scale = device_constant(_NORM_SCALE, x.device, torch.float32).view(1, 3, 1, 1)
    shift = device_constant(_NORM_SHIFT, x.device, torch.float32).view(1, 3, 1, 1)
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    return out.copy_(x).mul_(scale).add_(shift)


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


def sample_mix_params(gen: torch.Generator, height: int, width: int, *, device="cpu", mixup_alpha: float = 0.5,
                      cutmix_alpha: float = 0.5, switch_prob: float = 0.5, shape=()):
    """timm Mixup._params_per_batch + cutmix_bbox_and_lam (prob 1.0), as tensors of `shape` on `device`
    (0-d for one batch; (k,) draws k batches' parameters at once, with the same stream as one batch when
    k = 1).

    Returns (use_cutmix, lam, (yl, yh, xl, xh)): lam is already corrected to the clipped box area when
    cutmix is used; the box is timm's rand_bbox (side sqrt(1 − λ), centre uniform, clipped).
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError("mixup_cutmix needs mixup_alpha > 0 or cutmix_alpha > 0")
    u = uniform(gen, (*shape, 3), device).double().unbind(-1)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = u[0] < switch_prob
    else:
        use_cutmix = torch.full(shape, cutmix_alpha > 0, device=device)
    lam_mix = sample_beta(gen, mixup_alpha, shape, device) if mixup_alpha > 0 else torch.ones(shape, device=device)
    lam_cut = sample_beta(gen, cutmix_alpha, shape, device) if cutmix_alpha > 0 else torch.ones(shape, device=device)
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


def mixup_cutmix(x: Tensor, y: Tensor, gen: torch.Generator, *, num_classes: int = 10, mixup_alpha: float = 0.5,
                 cutmix_alpha: float = 0.5, switch_prob: float = 0.5, label_smoothing: float = 0.1,
                 inplace: bool = False, dispatch: str = "auto"):
    """timm Mixup(mode="batch", prob=1.0): one λ for the batch, each image mixed with its mirror in the
    batch order (x.flip(0)). x: (B, C, H, W) float → (mixed x, soft targets (B, num_classes) float32).
    `inplace` and `dispatch`: see `mix_images`."""
    use_cutmix, lam, box = sample_mix_params(gen, x.shape[2], x.shape[3], device=x.device, mixup_alpha=mixup_alpha,
                                             cutmix_alpha=cutmix_alpha, switch_prob=switch_prob)
    mixed = mix_images(x, use_cutmix, lam, box, inplace, dispatch)
    return mixed, mix_targets(smooth_targets(y, num_classes, label_smoothing), lam)


def mix_images(x: Tensor, use_cutmix: Tensor, lam: Tensor, box, inplace: bool = False,
               dispatch: str = "auto") -> Tensor:
    """One batch's mixing with drawn parameters (0-d tensors, `sample_mix_params`): cutmix pastes the box
    from the reversed batch, mixup blends x·λ + x.flip(0)·(1 − λ) in float32.

    dispatch (randaugment.resolve_dispatch): "subset" computes only the drawn mode, in place when `inplace`,
    with timm's own arithmetic; "mask" computes both and torch.where picks one. Same result either way."""
    yl, yh, xl, xh = box
    lam32 = lam.float()
    if resolve_dispatch(dispatch, x.device) == "subset":
        mixed = x if inplace else x.clone()
        if use_cutmix:
            region = (..., slice(int(yl), int(yh)), slice(int(xl), int(xh)))
            mixed[region] = mixed[region].flip(0)  # flip copies, so the assignment reads the unmixed pixels
        else:
            partner = mixed.flip(0).mul_(1.0 - lam32)
            mixed.mul_(lam32).add_(partner)
        return mixed
    partner = x.flip(0)
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    in_box = ((rows >= yl) & (rows < yh)).view(-1, 1) & ((cols >= xl) & (cols < xh)).view(1, -1)  # (H, W)
    mixed = torch.where(use_cutmix, torch.where(in_box, partner, x), x * lam32 + partner * (1.0 - lam32))
    return x.copy_(mixed) if inplace else mixed


def mix_targets(targets: Tensor, lam: Tensor) -> Tensor:
    """Soft targets (B, C) mixed as the images: t·λ + t.flip(0)·(1 − λ). With lam of shape (k,), targets
    hold k batches back to back and each batch is mixed with its own λ (its own reversal)."""
    lam32 = lam.float()
    if lam.dim() == 0:
        return targets * lam32 + targets.flip(0) * (1.0 - lam32)
    t = targets.view(lam.shape[0], -1, targets.shape[1])
    lam32 = lam32.view(-1, 1, 1)
    return (t * lam32 + t.flip(1) * (1.0 - lam32)).view_as(targets)


# ---------------------------------------------------------------------- random erasing
def sample_erase_boxes(gen: torch.Generator, n: int, height: int, width: int, *, p: float = 0.25,
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


def random_erasing(x: Tensor, gen: torch.Generator, *, p: float = 0.25, area=(0.02, 1 / 3),
                   aspect=(0.3, 1 / 0.3), inplace: bool = False, dispatch: str = "auto") -> Tensor:
    """timm RandomErasing(p, mode="pixel", count 1) on a normalised float batch: each erased box gets
    per-pixel N(0, 1) noise.

    dispatch (randaugment.resolve_dispatch): "subset" draws noise only for the erased pixels (about 5% of
    the batch) and touches only the erased images; "mask" draws a full-size noise tensor and keeps it with
    torch.where. The boxes are the same either way; the noise values differ (fewer numbers are drawn).
    """
    n, c, height, width = x.shape
    erase, top, left, h, w = sample_erase_boxes(gen, n, height, width, p=p, area=area, aspect=aspect, device=x.device)
    if resolve_dispatch(dispatch, x.device) == "subset":
        idx = erase.nonzero().squeeze(1)
        out = x if inplace else x.clone()
        if idx.numel():
            mask = _box_mask(top[idx], left[idx], h[idx], w[idx], height, width).expand(-1, c, -1, -1)
            noise = normal(gen, (int((h[idx] * w[idx]).sum()) * c,), x.device).to(x.dtype)
            erased = out.index_select(0, idx).masked_scatter_(mask, noise)  # (image, channel, row, col) order
            out.index_copy_(0, idx, erased)
        return out
    mask = _box_mask(top, left, h, w, height, width) & erase.view(-1, 1, 1, 1)
    noise = normal(gen, (n, c, height, width), x.device).to(x.dtype)
    return x.copy_(torch.where(mask, noise, x)) if inplace else torch.where(mask, noise, x)


def _box_mask(top: Tensor, left: Tensor, h: Tensor, w: Tensor, height: int, width: int) -> Tensor:
    """(n, 1, H, W) bool: True inside each image's box [top, top + h) × [left, left + w)."""
    rows = torch.arange(height, device=top.device).view(1, -1)
    cols = torch.arange(width, device=top.device).view(1, -1)
    in_rows = (rows >= top.view(-1, 1)) & (rows < (top + h).view(-1, 1))  # (n, H)
    in_cols = (cols >= left.view(-1, 1)) & (cols < (left + w).view(-1, 1))  # (n, W)
    return (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1)


# ---------------------------------------------------------------------- the pipeline
def augment_batch(x: Tensor, y: Tensor, gen: torch.Generator, *, scaling: bool = True, flip: bool = True,
                  randaug: bool = True, mixup: bool = True, erasing: bool = True, num_classes: int = 10,
                  dispatch: str = "auto"):
    """The training augmentation, in timm's order. x: (B, 3, H, W) uint8, y: (B,) int.

    Returns (normalised float32 batch (B, 3, H, W), soft targets (B, num_classes) float32 with label
    smoothing 0.1, mixed when mixup is on). Each flag turns one Table 7 stage off. dispatch: how per-image
    choices are carried out (randaugment.resolve_dispatch): "auto" reads them on the host only on CPU.
    """
    return augment_batches(x, y, gen, x.shape[0], scaling=scaling, flip=flip, randaug=randaug, mixup=mixup,
                           erasing=erasing, num_classes=num_classes, dispatch=dispatch)


def augment_batches(x: Tensor, y: Tensor, gen: torch.Generator, batch_size: int, *, scaling: bool = True,
                    flip: bool = True, randaug: bool = True, mixup: bool = True, erasing: bool = True,
                    num_classes: int = 10, dispatch: str = "auto"):
    """`augment_batch` for several consecutive training batches at once (x holds them back to back).

    Why: every stage but mixup is per image, so it runs once over the whole chunk; on CPU RandAugment's
    op dispatches then cover ~1000 images instead of 128 and the chunk augments ~1.7× faster (RESULTS.md).
    Mixup/CutMix stays per batch (one λ per batch, partner = that batch reversed); all batches' λ and boxes
    are drawn at once, and each batch is normalised and mixed while it is still in cache. `augment_batch`
    is this function with one batch.
    """
    if x.shape[0] % batch_size:
        raise ValueError(f"{x.shape[0]} images are not a whole number of batches of {batch_size}")
    if scaling:
        x = random_resized_crop(x, gen, flip_p=0.5 if flip else None)  # the flip rides on the resampling
    elif flip:
        x = hflip(x, gen)
    if randaug:
        x = rand_augment(x, gen, dispatch=dispatch)
    if mixup:  # every batch's λ and box in one draw; each batch normalised, then mixed while in cache
        use_cutmix, lam, (yl, yh, xl, xh) = sample_mix_params(gen, x.shape[2], x.shape[3], device=x.device,
                                                              shape=(x.shape[0] // batch_size,))
        xf = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for i, (xb, out) in enumerate(zip(x.split(batch_size), xf.split(batch_size))):
            mix_images(normalize(xb, out=out), use_cutmix[i], lam[i], (yl[i], yh[i], xl[i], xh[i]), inplace=True,
                       dispatch=dispatch)
        targets = mix_targets(smooth_targets(y, num_classes), lam)
    else:
        xf, targets = normalize(x), smooth_targets(y, num_classes)
    if erasing:
        xf = random_erasing(xf, gen, inplace=True, dispatch=dispatch)
    return xf, targets


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """timm SoftTargetCrossEntropy: mean over the batch of −Σ targets · log_softmax(logits)."""
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()

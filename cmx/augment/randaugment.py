"""RandAugment `rand-m9-mstd0.5-inc1` exactly as timm builds it, on whole uint8 batches (B, 3, H, W).

Laid out like timm's `data/auto_augment.py` so each op can be audited against it: op functions
(`NAME_TO_OP`), level → argument functions (`LEVEL_TO_ARG`) and the 15 "increasing" ops
(`RAND_INCREASING_OPS`). `benchmarks/check_randaugment_vs_timm.py` compares every op with timm's PIL op on
CIFAR images.

Per image and per layer (timm's RandAugment + AugmentOp): an op drawn uniformly with replacement, applied
with prob 0.5, magnitude gauss(9, 0.5) clipped to [0, 10], a random sign for signed ops, bilinear or bicubic
at random ("random" interpolation), fill = CIFAR mean. Pixels follow Pillow, not torchvision:
- ImageEnhance blends (Color, Contrast, Brightness, Sharpness) compute in float32 and truncate;
  L = (19595 R + 38470 G + 7471 B + 2^15) >> 16; Contrast blends towards the rounded mean of L;
  Sharpness blends towards the SMOOTH filter (kernel 1 1 1 / 1 5 1 / 1 1 1, /13, rounded), border unchanged.
- AutoContrast and Equalize build Pillow's per-channel lookup tables.
- Geometric ops are Image.transform(AFFINE): source point = A·(x+½, y+½, 1); a source point outside the
  image gets the fill colour, otherwise edge-clamped neighbours are interpolated (bilinear, or Pillow's
  a = -1 bicubic) and the result truncated. Rotation is about (W/2, H/2); shears are about the origin.
- Posterize to 0 bits (magnitude clipped at 10) gives a black image, as Pillow < 11 did (11+ raises).

Checked (benchmarks/check_randaugment_vs_timm.py, Pillow 13): every op equals timm's PIL op pixel for pixel
on 512 CIFAR-10 images at magnitudes 0.7, 4.3, 9, 9.87 and 10, both signs, both interpolations, and so does
the crop resampler in augment.py. Exactness needs float64 where Pillow uses double (geometric ops) and
float32 where it uses float (blends), because Pillow truncates.

Randomness: every number comes from the explicit generator, drawn on the generator's own device and moved
to the batch's device. A CUDA generator with a CUDA batch draws on the GPU; a CPU generator also works with
a CUDA batch (a few numbers per image are copied over). Streams differ between CPU and CUDA generators.

Dispatch: each image runs only the op it drew. On CPU the images are sorted by op and each op runs on its
block (reading the draws on the host is free there; the affine ops share one sampler call per axis and
filter); on CUDA every op runs on the whole batch and `torch.where` keeps the drawn result, so nothing
waits for the host (15× the arithmetic, which a GPU absorbs at 32×32; on CPU it is ~30× slower). Both give
identical results (tests check it). Only the CPU path has been run: this machine has no GPU.
"""
from __future__ import annotations

import math

import torch

from .rng import device_constant, integers, normal, resolve_dispatch, uniform  # noqa: F401 (re-exported)

Tensor = torch.Tensor
_LEVEL_DENOM = 10.0
CIFAR_FILL = (125, 123, 114)  # timm: round(255 * CIFAR mean)


# ---------------------------------------------------------------------- Pillow pixel primitives
def _per_image(v, n: int, device, dtype) -> Tensor:
    """A per-image argument: an (n,) tensor passes through; a scalar is filled on the device (no copy)."""
    if torch.is_tensor(v):
        return v.to(device=device, dtype=dtype).expand(n)
    return torch.full((n,), v, dtype=dtype, device=device)


def _blend(degenerate: Tensor, img: Tensor, factor) -> Tensor:
    """Image.blend(degenerate, img, factor): float32 `d + f·(i − d)`, clipped, truncated (Blend.c)."""
    f = _per_image(factor, img.shape[0], img.device, torch.float32).view(-1, 1, 1, 1)
    d = degenerate.float()
    return (d + f * (img.float() - d)).clamp_(0, 255).floor_().to(torch.uint8)


def _gray(x: Tensor) -> Tensor:
    """convert("L"): (B, 3, H, W) → (B, 1, H, W), ITU-R 601-2 in Pillow's 16-bit fixed point."""
    r, g, b = x.int().unbind(1)
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).unsqueeze(1).to(torch.uint8)


def _apply_lut(x: Tensor, lut: Tensor) -> Tensor:
    """Per-image, per-channel lookup: lut (B, 3, 256) of values 0..255."""
    n, c, h, w = x.shape
    return lut.to(torch.uint8).gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


def _smooth(x: Tensor) -> Tensor:
    """ImageFilter.SMOOTH (Filter.c ImagingFilter3x3): float32 sums in Pillow's order, +0.5, truncated;
    the one-pixel border is copied unchanged."""
    k1 = torch.tensor(1.0) / 13.0  # Pillow divides each float32 kernel entry by the scale
    k5 = torch.tensor(5.0) / 13.0
    p = x.float()

    def row(r, centre):  # one kernel row over shifted columns: (B, 3, H-2, W-2)
        return r[..., :-2] * k1 + r[..., 1:-1] * centre + r[..., 2:] * k1

    ss = 0.5 + row(p[:, :, 2:], k1)
    ss = ss + row(p[:, :, 1:-1], k5)
    ss = ss + row(p[:, :, :-2], k1)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = ss.clamp_(0, 255).floor_().to(torch.uint8)
    return out


def _coefficients(v1, v2, v3, v4, bicubic) -> list[Tensor]:
    """Geometry.c's interpolation coefficients of four neighbours v1..v4 (the point lies between v2 and v3):
    bilinear [v2, v3 − v2]; bicubic (Pillow's a = −1 cubic in Horner form) [v2, −v1 + v3, 2(v1 − v2) + v3 − v4,
    −v1 + v2 − v3 + v4]. Flat neighbourhoods stay exact in both (no weight sums that miss 1 by an ulp).

    bicubic: a Python bool when every image uses the same filter (bilinear then needs only v2, v3; v1 and v4
    may be None), or a per-image bool tensor: 4 coefficients, picked by torch.where, with zeros in the last
    two for bilinear images, which `_interpolate` turns into exactly `v2 + d·(v3 − v2)`.
    """
    if bicubic is False:
        return [v2, v3 - v2]
    cubic = [v2, -v1 + v3, 2 * (v1 - v2) + v3 - v4, -v1 + v2 - v3 + v4]
    if bicubic is True:
        return cubic
    return [v2, torch.where(bicubic, cubic[1], v3 - v2), torch.where(bicubic, cubic[2], 0),
            torch.where(bicubic, cubic[3], 0)]


def _interpolate(coeffs, d: Tensor) -> Tensor:
    """Pillow's interpolation at distance d from its coefficients: p1 + d·p2, or p1 + d·(p2 + d·(p3 + d·p4))."""
    if len(coeffs) == 2:
        return coeffs[0] + d * coeffs[1]
    p1, p2, p3, p4 = coeffs
    return p1 + d * (p2 + d * (p3 + d * p4))


def _first_pass_planes(x: Tensor, dim: int, bicubic) -> Tensor:
    """The first pass's `_coefficients` at every source position along `dim` (3: x, 2: y).

    Position i ∈ [−1, size − 1] is floor(coordinate − ½) of a sample point inside the image; its taps are
    the edge-clamped pixels i−1..i+2 (bicubic) or i, i+1 (bilinear). Returns float64 planes (B, ch, P, ...)
    with size + 1 positions along `dim` and P = 4 (bicubic, or a per-image bool tensor) or 2 (bilinear).
    Why: the coefficients of integer pixels are exact small integers, so they are computed once per source
    position in int16 instead of once per output sample and tap in float64 (Rotate reads each position 4
    times); the values are identical.
    """
    size = x.shape[dim]
    x16 = x.short()
    first, last = x16.narrow(dim, 0, 1), x16.narrow(dim, size - 1, 1)
    padded = torch.cat([first, first, x16, last, last], dim)  # index j holds pixel clamp(j − 2)

    def tap(offset: int) -> Tensor:  # pixel clamp(i + offset) for positions i = −1 .. size − 1
        return padded.narrow(dim, offset + 1, size + 1)

    cub = bicubic if isinstance(bicubic, bool) else bicubic.view(-1, 1, 1, 1)
    outer = (None, None) if bicubic is False else (tap(-1), tap(2))
    return torch.stack(_coefficients(outer[0], tap(0), tap(1), outer[1], cub), 2).double()


def _affine(x: Tensor, coeffs: Tensor, bicubic, fill, along: str | None = None) -> Tensor:
    """Image.transform(size, AFFINE, coeffs, resample, fillcolor=fill) for each image.

    coeffs (B, 6) float64 (a, b, c, d, e, f): output pixel (x, y) reads the input at
    (a·X + b·Y + c, d·X + e·Y + f) with X = x + ½, Y = y + ½ (Pillow's pixel-centre convention).
    bicubic: per-image bool tensor, or one Python bool for the whole batch, which reads only the taps that
    filter needs (bilinear 2 per axis instead of 4).
    along="x" (or "y") promises the map only moves points along x (y): the other coordinate then falls
    exactly on pixel centres, so one pass along that axis gives the same result as the 2-D sampler.
    Otherwise: a horizontal pass at each of the 4 (2) rows around the point, then a vertical one, in float64
    like Pillow (its truncation turns float32 rounding of exact integers into off-by-one pixels).
    """
    n, ch, h, w = x.shape
    dev = x.device
    if not isinstance(bicubic, bool):
        bicubic = _per_image(bicubic, n, dev, torch.bool)
    ys = torch.arange(h, device=dev, dtype=torch.float64).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=dev, dtype=torch.float64).view(1, 1, w) + 0.5
    a, b, c, d, e, f = coeffs.to(dev, torch.float64).view(n, 6, 1, 1).unbind(1)
    xin = a * xs + b * ys + c  # (B, H, W), in double as Pillow
    yin = d * xs + e * ys + f
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    x0, y0 = (xin - 0.5).floor(), (yin - 0.5).floor()
    dx, dy = xin - 0.5 - x0, yin - 0.5 - y0
    if along == "y":  # one vertical pass; x0 is each output pixel's own column
        planes = _first_pass_planes(x, 2, bicubic)  # (B, ch, P, H + 1, W)
        index = (y0.long() + 1).clamp_(0, h) * w + x0.long().clamp_(0, w - 1)  # (B, H, W)
        p = _interpolate(_gather_planes(planes, index).unbind(2), dy.view(n, 1, h, w))
    else:
        planes = _first_pass_planes(x, 3, bicubic)  # (B, ch, P, H, W + 1)
        taps = [0] if along == "x" else [0, 1] if bicubic is False else [-1, 0, 1, 2]
        taps = device_constant(tuple(taps), dev, torch.long).view(1, -1, 1, 1)  # cached: no copy and sync per call
        rows = (y0.long().unsqueeze(1) + taps).clamp_(0, h - 1)  # (B, row taps, H, W)
        index = rows * (w + 1) + (x0.long() + 1).clamp_(0, w).unsqueeze(1)
        p = _interpolate(_gather_planes(planes, index).unbind(2), dx.view(n, 1, 1, h, w))  # (B, ch, r, H, W)
        if along == "x":
            p = p.squeeze(2)
        else:  # the vertical pass over the row values (float64, as Pillow)
            rows4 = p.unbind(2) if p.shape[2] == 4 else (None, *p.unbind(2), None)
            cub = bicubic if isinstance(bicubic, bool) else bicubic.view(n, 1, 1, 1)
            p = _interpolate(_coefficients(*rows4, cub), dy.view(n, 1, h, w))
    v = p.clamp_(0, 255).floor_().to(torch.uint8)
    fill = device_constant(tuple(fill), dev, torch.uint8).view(1, ch, 1, 1)
    return torch.where(inside.unsqueeze(1), v, fill)


def _gather_planes(planes: Tensor, index: Tensor) -> Tensor:
    """planes (B, ch, P, *source) at flat source positions index (B, *out) → (B, ch, P, *out)."""
    n, ch, count = planes.shape[:3]
    flat = planes.reshape(n, ch * count, -1).gather(2, index.reshape(n, 1, -1).expand(n, ch * count, -1))
    return flat.view(n, ch, count, *index.shape[1:])


def _affine_coeffs(n, device, *, a=1.0, b=0.0, c=0.0, d=0.0, e=1.0, f=0.0) -> Tensor:
    cols = [_per_image(v, n, device, torch.float64) for v in (a, b, c, d, e, f)]
    return torch.stack(cols, dim=1)


# ---------------------------------------------------------------------- op functions (timm NAME_TO_OP)
# Each takes a uint8 batch (n, 3, H, W) and per-image arguments (an (n,) tensor or a scalar).
def auto_contrast(x: Tensor, **_) -> Tensor:
    """ImageOps.autocontrast: per channel, lut[i] = int(i·s − lo·s), s = 255/(hi − lo); identity if flat."""
    flat = x.flatten(2)
    lo, hi = flat.amin(2).double(), flat.amax(2).double()  # (n, 3)
    # a true division (`255.0 / tensor` would multiply by a reciprocal and round differently from Python)
    scale = torch.full_like(lo, 255.0).div(hi - lo).unsqueeze(-1)
    ix = torch.arange(256, device=x.device, dtype=torch.float64)
    lut = (ix * scale + (-lo.unsqueeze(-1) * scale)).trunc().clamp(0, 255)
    return _apply_lut(x, torch.where((hi > lo).unsqueeze(-1), lut, ix))


def equalize(x: Tensor, **_) -> Tensor:
    """ImageOps.equalize per channel: step = (N − count of the top value) // 255,
    lut[i] = (step // 2 + #pixels below i) // step; identity when step == 0 (incl. a single value)."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, flat, torch.ones_like(flat))
    top_count = hist.gather(1, flat.amax(1, keepdim=True))
    step = (h * w - top_count) // 255  # (n·c, 1)
    below = hist.cumsum(1) - hist
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)  # Pillow's point() clips to 8 bits
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device))
    return _apply_lut(x, lut.view(n, c, 256))


def invert(x: Tensor, **_) -> Tensor:
    return 255 - x


def posterize(x: Tensor, bits, **_) -> Tensor:
    """Keep the top `bits` bits (0..8). 0 bits → black image (old Pillow; Pillow ≥ 11 raises)."""
    bits = _per_image(bits, x.shape[0], x.device, torch.long).clamp(0, 8)
    mask = 256 - (1 << (8 - bits))  # 8 bits → 255, 0 bits → 0
    return x & mask.to(torch.uint8).view(-1, 1, 1, 1)


def solarize(x: Tensor, thresh, **_) -> Tensor:
    """ImageOps.solarize: values ≥ thresh are inverted (thresh 256 → unchanged)."""
    t = _per_image(thresh, x.shape[0], x.device, torch.long).view(-1, 1, 1, 1)
    return torch.where(x < t, x, 255 - x)


def solarize_add(x: Tensor, add, thresh: int = 128, **_) -> Tensor:
    """timm's solarize_add: values < thresh get `add` added, capped at 255."""
    a = _per_image(add, x.shape[0], x.device, torch.int16).view(-1, 1, 1, 1)
    return torch.where(x < thresh, (x.short() + a).clamp(max=255).to(torch.uint8), x)


def color(x: Tensor, factor, **_) -> Tensor:
    """ImageEnhance.Color: blend with the grayscale image."""
    return _blend(_gray(x), x, factor)


def contrast(x: Tensor, factor, **_) -> Tensor:
    """ImageEnhance.Contrast: blend with a flat image at int(mean(L) + 0.5)."""
    lum = _gray(x)
    mean = (lum.flatten(1).sum(1).double() / lum[0].numel() + 0.5).floor()
    return _blend(mean.view(-1, 1, 1, 1), x, factor)


def brightness(x: Tensor, factor, **_) -> Tensor:
    """ImageEnhance.Brightness: blend with black."""
    return _blend(torch.zeros((), device=x.device), x, factor)


def sharpness(x: Tensor, factor, **_) -> Tensor:
    """ImageEnhance.Sharpness: blend with the SMOOTH-filtered image."""
    return _blend(_smooth(x), x, factor)


def rotate_coeffs(degrees: Tensor, h: int, w: int) -> Tensor:
    """Image.rotate(degrees) about (W/2, H/2), counter-clockwise for positive degrees: (n,) → (n, 6)."""
    # Pillow first reduces the angle mod 360 (-30° → 330°, whose cos/sin round differently), then uses
    # -radians(angle) with cos/sin rounded to 15 decimals (torch's decimal rounding may differ from Python's
    # in the last bit; no pixel differed in the checks)
    angle = -torch.remainder(degrees, 360.0) * (math.pi / 180.0)
    cos, sin = torch.round(torch.cos(angle), decimals=15), torch.round(torch.sin(angle), decimals=15)
    cx, cy = w / 2.0, h / 2.0
    return _affine_coeffs(len(degrees), degrees.device, a=cos, b=sin, c=cos * -cx + sin * -cy + cx,
                          d=-sin, e=cos, f=-sin * -cx + cos * -cy + cy)


# op name → (its affine coefficients from its per-image argument (n,) and the image size, the one axis it
# moves points along or None). Translations: output x shows input x + pct·W (content moves left for pct > 0).
AFFINE_OPS = {
    "Rotate": (rotate_coeffs, None),
    "ShearX": (lambda arg, h, w: _affine_coeffs(len(arg), arg.device, b=arg), "x"),
    "ShearY": (lambda arg, h, w: _affine_coeffs(len(arg), arg.device, d=arg), "y"),
    "TranslateXRel": (lambda arg, h, w: _affine_coeffs(len(arg), arg.device, c=arg * w), "x"),
    "TranslateYRel": (lambda arg, h, w: _affine_coeffs(len(arg), arg.device, f=arg * h), "y"),
}


def _affine_op(name: str, x: Tensor, arg, bicubic, fill) -> Tensor:
    coeffs_of, along = AFFINE_OPS[name]
    arg = _per_image(arg, x.shape[0], x.device, torch.float64)
    return _affine(x, coeffs_of(arg, x.shape[2], x.shape[3]), bicubic, fill, along=along)


def rotate(x: Tensor, degrees, bicubic=False, fill=CIFAR_FILL, **_) -> Tensor:
    return _affine_op("Rotate", x, degrees, bicubic, fill)


def shear_x(x: Tensor, factor, bicubic=False, fill=CIFAR_FILL, **_) -> Tensor:
    return _affine_op("ShearX", x, factor, bicubic, fill)


def shear_y(x: Tensor, factor, bicubic=False, fill=CIFAR_FILL, **_) -> Tensor:
    return _affine_op("ShearY", x, factor, bicubic, fill)


def translate_x_rel(x: Tensor, pct, bicubic=False, fill=CIFAR_FILL, **_) -> Tensor:
    return _affine_op("TranslateXRel", x, pct, bicubic, fill)


def translate_y_rel(x: Tensor, pct, bicubic=False, fill=CIFAR_FILL, **_) -> Tensor:
    return _affine_op("TranslateYRel", x, pct, bicubic, fill)


# ---------------------------------------------------------------------- level → argument (timm LEVEL_TO_ARG)
# level: (n,) float64 magnitudes in [0, 10]; sign: (n,) ±1 (timm's _randomly_negate), used by signed ops.
def _rotate_level_to_arg(level, sign):  # [-30, 30] degrees
    return sign * ((level / _LEVEL_DENOM) * 30.0)


def _enhance_increasing_level_to_arg(level, sign):  # 1 ± 0.9·m/10, kept ≥ 0.1
    return (1.0 + sign * ((level / _LEVEL_DENOM) * 0.9)).clamp(min=0.1)


def _shear_level_to_arg(level, sign):  # [-0.3, 0.3]
    return sign * ((level / _LEVEL_DENOM) * 0.3)


def _translate_rel_level_to_arg(level, sign):  # [-0.45, 0.45] of the image size
    return sign * ((level / _LEVEL_DENOM) * 0.45)


def _posterize_increasing_level_to_arg(level, _sign):  # 4 bits down to 0 bits
    return 4 - ((level / _LEVEL_DENOM) * 4).trunc().long()


def _solarize_increasing_level_to_arg(level, _sign):  # threshold 256 down to 0
    return 256 - ((level / _LEVEL_DENOM) * 256).trunc().long().clamp(max=256)


def _solarize_add_level_to_arg(level, _sign):  # add 0 up to 110
    return ((level / _LEVEL_DENOM) * 110).trunc().long().clamp(max=128)


LEVEL_TO_ARG = {
    "AutoContrast": None,
    "Equalize": None,
    "Invert": None,
    "Rotate": _rotate_level_to_arg,
    "PosterizeIncreasing": _posterize_increasing_level_to_arg,
    "SolarizeIncreasing": _solarize_increasing_level_to_arg,
    "SolarizeAdd": _solarize_add_level_to_arg,
    "ColorIncreasing": _enhance_increasing_level_to_arg,
    "ContrastIncreasing": _enhance_increasing_level_to_arg,
    "BrightnessIncreasing": _enhance_increasing_level_to_arg,
    "SharpnessIncreasing": _enhance_increasing_level_to_arg,
    "ShearX": _shear_level_to_arg,
    "ShearY": _shear_level_to_arg,
    "TranslateXRel": _translate_rel_level_to_arg,
    "TranslateYRel": _translate_rel_level_to_arg,
}

NAME_TO_OP = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Rotate": rotate,
    "PosterizeIncreasing": posterize,
    "SolarizeIncreasing": solarize,
    "SolarizeAdd": solarize_add,
    "ColorIncreasing": color,
    "ContrastIncreasing": contrast,
    "BrightnessIncreasing": brightness,
    "SharpnessIncreasing": sharpness,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateXRel": translate_x_rel,
    "TranslateYRel": translate_y_rel,
}

RAND_INCREASING_OPS = tuple(NAME_TO_OP)  # timm's _RAND_INCREASING_TRANSFORMS, same order


def apply_op(name: str, x: Tensor, level, sign=1.0, bicubic=False, fill=CIFAR_FILL) -> Tensor:
    """One op at a given magnitude (scalar or (n,)), as timm's AugmentOp does after drawing its randomness."""
    n = x.shape[0]
    level = _per_image(level, n, x.device, torch.float64)
    sign = _per_image(sign, n, x.device, torch.float64)
    level_fn = LEVEL_TO_ARG[name]
    args = () if level_fn is None else (level_fn(level, sign),)
    return NAME_TO_OP[name](x, *args, bicubic=bicubic, fill=fill)


# ---------------------------------------------------------------------- RandAugment
def rand_augment(x: Tensor, gen: torch.Generator, *, num_ops: int = 2, magnitude: float = 9.0,
                 magnitude_std: float = 0.5, prob: float = 0.5, fill=CIFAR_FILL,
                 ops=RAND_INCREASING_OPS, dispatch: str = "auto") -> Tensor:
    """timm's RandAugment on a uint8 batch; the defaults are `rand-m9-mstd0.5-inc1` (2 ops, p 0.5).

    x: (B, 3, H, W) uint8 on any device → same shape, dtype and device. Per image and layer: op index,
    apply?, sign, interpolation and magnitude are drawn from `gen`. magnitude_std=inf draws U(0, magnitude).
    dispatch: "subset" (run each op on the images that drew it), "mask" (run every op on the whole batch,
    keep by torch.where; no host sync) or "auto" (subset on CPU, mask elsewhere). Same result either way.
    """
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"rand_augment expects a uint8 (B, 3, H, W) batch, got {tuple(x.shape)} {x.dtype}")
    dispatch = resolve_dispatch(dispatch, x.device)
    n, dev = x.shape[0], x.device
    for _ in range(num_ops):
        choice = integers(gen, len(ops), (n,), dev)  # with replacement, uniform
        u = uniform(gen, (n, 4), dev).double()
        z = normal(gen, (n,), dev).double()
        if magnitude_std == float("inf"):
            level = u[:, 3] * magnitude
        else:
            level = magnitude + magnitude_std * z if magnitude_std > 0 else torch.full_like(z, magnitude)
        level = level.clamp(0.0, _LEVEL_DENOM)
        applied = u[:, 0] <= prob  # timm skips when random() > prob
        sign = torch.where(u[:, 1] > 0.5, -1.0, 1.0).double()  # timm negates when random() > 0.5
        bicubic = u[:, 2] < 0.5  # random.choice((BILINEAR, BICUBIC))
        if dispatch == "subset":
            out = _layer_by_subsets(x, torch.where(applied, choice, -1), (level, sign, bicubic), fill, ops)
        else:
            out = x.clone()
            for k, name in enumerate(ops):
                chosen = (applied & (choice == k)).view(-1, 1, 1, 1)
                out = torch.where(chosen, apply_op(name, x, level, sign, bicubic, fill), out)
        x = out
    return x


_NOT_APPLIED = 10_000
_AXES = (None, "x", "y")  # the `along` of each affine sampler call group


def _layer_by_subsets(x: Tensor, op: Tensor, draws: tuple[Tensor, Tensor, Tensor], fill, ops) -> Tensor:
    """One RandAugment layer where each image runs only the op it drew (op: (n,) index into ops, −1 = none;
    draws: its (level, sign, bicubic)).

    The images are sorted so that each op's images form one block, and the affine ops share sampler calls:
    one per axis and filter (ShearX with TranslateXRel, ShearY with TranslateYRel, Rotate; bilinear or
    bicubic), 6 calls instead of 10, each computing only its filter. Why: at 1,024 images a layer is ~1,300
    small tensor ops and their dispatch alone cost ~10 µs per image for the two layers on CPU (measured with
    2×2 images), a third of RandAugment's time; sorting and sharing remove about a third of the ops.
    """
    level, sign, bicubic = draws  # each (n,): the layer's magnitude, sign and filter per image
    n, dev = x.shape[0], x.device
    is_affine = torch.tensor([name in AFFINE_OPS for name in ops], device=dev)
    axis_of = torch.tensor([_AXES.index(AFFINE_OPS[name][1]) if name in AFFINE_OPS else 0 for name in ops],
                           device=dev)
    k = op.clamp(min=0)
    group = 2 * axis_of[k] + bicubic.long()  # affine ops: the sampler call they share
    key = torch.where(is_affine[k], 100 + 100 * group + k, k)  # non-affine: their op index
    key = torch.where(op >= 0, key, _NOT_APPLIED)
    order = torch.argsort(key, stable=True)
    keys, counts = torch.unique_consecutive(key[order], return_counts=True)
    # index_select, not x[order]: a row gather ~20× faster than advanced indexing on CPU (measured)
    xs, levels, signs = x.index_select(0, order), level[order], sign[order]
    out = xs.clone()
    affine_parts: dict[int, list] = {}  # sampler call → [(start, end, coefficients)]
    start = 0
    for key_i, count in zip(keys.tolist(), counts.tolist()):
        part, start = slice(start, start + count), start + count
        if key_i == _NOT_APPLIED:
            continue
        name = ops[key_i % 100]
        if key_i < 100:
            out[part] = apply_op(name, xs[part], levels[part], signs[part], fill=fill)
            continue
        coeffs_of, _ = AFFINE_OPS[name]
        arg = LEVEL_TO_ARG[name](levels[part], signs[part])
        affine_parts.setdefault((key_i - 100) // 100, []).append((part, coeffs_of(arg, x.shape[2], x.shape[3])))
    for call, parts in affine_parts.items():  # each call's parts are adjacent in the sorted order
        part = slice(parts[0][0].start, parts[-1][0].stop)
        coeffs = torch.cat([c for _, c in parts])
        out[part] = _affine(xs[part], coeffs, bool(call % 2), fill, along=_AXES[call // 2])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=dev)
    return out.index_select(0, inverse)

"""Batch augmentation: crop boxes, flip, normalise, mixup/cutmix, label smoothing, erasing, the pipeline."""
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats

from cmx.augment import pipeline as A
from cmx.run.data import MEAN, STD


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_images(n=8, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen(seed))


# ---------------------------------------------------------------------- timm's per-image samplers, for reference
def timm_crop_params(rng, scale=(0.75, 1.0), ratio=(3 / 4, 4 / 3), size=32):
    """RandomResizedCropAndInterpolation.get_params on a size×size image."""
    for _ in range(10):
        target_area = rng.uniform(*scale) * size * size
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if w <= size and h <= size:
            return rng.randint(0, size - h), rng.randint(0, size - w), h, w
    return 0, 0, size, size


def timm_erase_params(rng, p=0.25, area=(0.02, 1 / 3), min_aspect=0.3, size=32):
    """RandomErasing._erase (count 1): None or (top, left, h, w)."""
    if rng.random() > p:
        return None
    for _ in range(10):
        target_area = rng.uniform(*area) * size * size
        aspect = math.exp(rng.uniform(math.log(min_aspect), math.log(1 / min_aspect)))
        h, w = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if w < size and h < size:
            return rng.randint(0, size - h), rng.randint(0, size - w), h, w
    return None


# ---------------------------------------------------------------------- random resized crop
def test_crop_boxes_keep_timms_area_and_aspect_ranges_and_statistics():
    n = 20000
    top, left, h, w = A.sample_crop_boxes(gen(0), n, 32, 32)
    area, aspect = (h * w).double() / 1024, w.double() / h.double()
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    assert area.max() <= 1.0 and area.min() >= 0.70  # 0.75 less the rounding of w and h
    assert aspect.min() >= 0.70 and aspect.max() <= 1.43  # 3/4..4/3 up to rounding
    rng = random.Random(0)
    ref = torch.tensor([timm_crop_params(rng) for _ in range(n)], dtype=torch.float64)
    ref_area, ref_aspect = ref[:, 2] * ref[:, 3] / 1024, ref[:, 3] / ref[:, 2]
    assert area.mean().item() == pytest.approx(ref_area.mean().item(), abs=0.003)
    assert aspect.log().mean().item() == pytest.approx(ref_aspect.log().mean().item(), abs=0.005)
    whole = ((h == 32) & (w == 32)).double().mean().item()  # includes the centre-crop fallback
    ref_whole = ((ref[:, 2] == 32) & (ref[:, 3] == 32)).double().mean().item()
    assert whole == pytest.approx(ref_whole, abs=0.01)
    assert top.double().mean().item() == pytest.approx(ref[:, 0].mean().item(), abs=0.05)


def test_crop_box_fallback_is_the_centre_crop():
    # scale > 1 never fits: every image falls back to timm's centre crop (the whole square image)
    top, left, h, w = A.sample_crop_boxes(gen(0), 50, 32, 32, scale=(1.5, 2.0))
    assert (top == 0).all() and (left == 0).all() and (h == 32).all() and (w == 32).all()
    top, left, h, w = A.sample_crop_boxes(gen(0), 50, 32, 64, scale=(1.5, 2.0))  # too wide: clamp to 4/3
    assert (h == 32).all() and (w == 43).all() and (left == 10).all() and (top == 0).all()


@pytest.fixture(params=["highest", "high"])
def matmul_precision(request):
    """"highest" takes the float32 split-weight path on CPU, anything else the float64 one."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(request.param)
    yield request.param
    torch.set_float32_matmul_precision(before)


def pillow_resized_crop(x, top, left, h, w, bicubic, mirror=None):
    resample = Image.BICUBIC if bicubic else Image.BILINEAR
    out = []
    for i in range(x.shape[0]):
        t, l, hh, ww = int(top[i]), int(left[i]), int(h[i]), int(w[i])
        im = Image.fromarray(x[i].permute(1, 2, 0).numpy()).crop((l, t, l + ww, t + hh)).resize((32, 32), resample)
        if mirror is not None and mirror[i]:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(torch.from_numpy(np.array(im)).permute(2, 0, 1))
    return torch.stack(out)


@pytest.mark.parametrize("bicubic", [False, True])
def test_resized_crop_equals_pillow_crop_and_resize(bicubic, matmul_precision):
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    ramps = torch.stack([xx * 8, yy * 8, (xx + yy) * 4]).clamp(0, 255).to(torch.uint8)  # smooth: many exact ties
    x = torch.cat([random_images(48), ramps.expand(8, 3, 32, 32), torch.full((8, 3, 32, 32), 255, dtype=torch.uint8)])
    top, left, h, w = A.sample_crop_boxes(gen(1), 64, 32, 32, scale=(0.35, 1.0))
    mirror = torch.arange(64) % 3 == 0
    out = A.resized_crop(x, top, left, h, w, bicubic, mirror=mirror)
    assert torch.equal(out, pillow_resized_crop(x, top, left, h, w, bicubic, mirror))


def test_crop_with_the_flip_folded_in_equals_crop_then_flip():
    x = random_images(64)
    g = gen(3)
    separate = A.hflip(A.random_resized_crop(x, g), g)  # the same generator: crop draws, then flip draws
    assert torch.equal(A.random_resized_crop(x, gen(3), flip_p=0.5), separate)


def test_random_resized_crop_of_the_whole_image_is_identity():
    x = random_images(8)
    out = A.random_resized_crop(x, gen(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(out, x)
    out = A.random_resized_crop(x, gen(0))
    assert out.shape == x.shape and out.dtype == torch.uint8 and not torch.equal(out, x)


# ---------------------------------------------------------------------- flip, normalise
def test_hflip_mirrors_about_half_of_the_images():
    x = random_images(2000)
    out = A.hflip(x, gen(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert 0.45 < mirrored.double().mean().item() < 0.55
    assert torch.equal(A.hflip(x[:10], gen(0), p=0.0), x[:10])
    assert torch.equal(A.hflip(x[:10], gen(0), p=1.0), x[:10].flip(3))


def test_normalize_uses_the_cifar_statistics():
    x = torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 255.0)]).to(torch.uint8)
    out = A.normalize(x)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0], -mean / std) and torch.allclose(out[1], (1 - mean) / std)
    assert torch.equal(A.normalize(x), A.normalize(x.float()))  # uint8 or float on the 0-255 scale


# ---------------------------------------------------------------------- mixup / cutmix / smoothing
def test_smooth_targets():
    y = torch.tensor([0, 3, 9])
    t = A.smooth_targets(y, 10, 0.1)
    assert torch.allclose(t, F.one_hot(y, 10) * 0.9 + 0.01)
    assert torch.allclose(t.sum(1), torch.ones(3))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_beta_sampler_matches_the_beta_distribution(alpha):
    s = A.sample_beta(gen(0), alpha, (5000,)).numpy()
    assert stats.kstest(s, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_mix_params_switch_between_mixup_and_cutmix_with_beta_lambdas():
    draws = [A.sample_mix_params(gen(s), 32, 32) for s in range(1500)]
    cut = torch.stack([d[0] for d in draws])
    lam = torch.stack([d[1] for d in draws]).double()
    assert 0.45 < cut.double().mean().item() < 0.55
    assert stats.kstest(lam[~cut].numpy(), stats.beta(0.5, 0.5).cdf).pvalue > 1e-3  # mixup: λ ~ Beta(.5,.5)
    for use_cutmix, lam_i, (yl, yh, xl, xh) in draws[:200]:
        if use_cutmix:  # λ corrected to the clipped box area
            assert 0 <= yl <= yh <= 32 and 0 <= xl <= xh <= 32
            assert lam_i.item() == pytest.approx(1 - ((yh - yl) * (xh - xl)).item() / 1024)


def test_mixup_cutmix_pairs_each_image_with_the_reversed_batch_and_targets_match_pixels():
    b = 8
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 32, 32).contiguous()  # image i ≡ i
    y = torch.arange(b)
    modes = set()
    for seed in range(40):
        mixed, t = A.mixup_cutmix(x, y, gen(seed), num_classes=10, label_smoothing=0.0)
        assert torch.allclose(t.sum(1), torch.ones(b))
        partner = b - 1 - y
        own, other = t[y, y], t[y, partner]
        # the pixel mass of image i is (own share)·i + (partner share)·(b − 1 − i), for mixup and cutmix alike
        assert torch.allclose(mixed.mean((1, 2, 3)), own * y + other * partner, atol=1e-4)
        values = mixed.unique()
        modes.add("cutmix" if torch.isin(values, torch.arange(b, dtype=torch.float32)).all() else "mixup")
    assert modes == {"mixup", "cutmix"}


@pytest.mark.parametrize("inplace", [False, True])
def test_mixup_subset_and_mask_dispatch_agree(inplace):
    x, y = random_images(16).float(), torch.arange(16) % 10
    for seed in range(6):  # both modes occur
        ref, ref_t = A.mixup_cutmix(x, y, gen(seed), dispatch="mask")
        xs = x.clone()
        out, t = A.mixup_cutmix(xs, y, gen(seed), dispatch="subset", inplace=inplace)
        assert torch.equal(out, ref) and torch.equal(t, ref_t)
        assert torch.equal(xs, ref if inplace else x)  # in place only when asked


def test_a_chunk_of_batches_mixes_each_batch_within_itself_with_its_own_lambda():
    b, k = 8, 6
    x = (torch.arange(b * k) * 5).view(-1, 1, 1, 1).expand(b * k, 3, 32, 32).to(torch.uint8)  # image i ≡ 5i
    y = torch.arange(b * k) % 10
    out, t = A.augment_batches(x, y, gen(2), b, scaling=False, flip=False, randaug=False, erasing=False)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    raw = ((out * std + mean) * 255).mean((1, 2, 3)).double()  # each image's mean pixel, 0-255 scale
    lams = set()
    for j in range(k):
        i = torch.arange(j * b, (j + 1) * b)
        partner = i.flip(0)
        own = (t[i, y[i]] - 0.01) / 0.9  # undo label smoothing 0.1 over 10 classes
        assert torch.allclose(raw[i], own.double() * 5 * i + (1 - own.double()) * 5 * partner, atol=0.05)
        lams.add(round(own[0].item(), 4))
    assert len(lams) > 1


def test_mixup_targets_fold_in_label_smoothing():
    x, y = random_images(6).float(), torch.tensor([1, 2, 3, 4, 5, 6])
    _, t = A.mixup_cutmix(x, y, gen(0))
    assert torch.allclose(t.sum(1), torch.ones(6))
    assert t.min().item() == pytest.approx(0.01)  # classes in neither image keep the off value 0.1/10
    assert (t > 0.011).sum(1).le(2).all()


# ---------------------------------------------------------------------- random erasing
@pytest.mark.parametrize("dispatch", ["subset", "mask"])
def test_random_erasing_touches_a_quarter_of_images_with_boxes_in_range(dispatch):
    n = 4000
    x = torch.zeros(n, 3, 32, 32)
    out = A.random_erasing(x, gen(0), dispatch=dispatch)
    assert torch.equal(x, torch.zeros_like(x))  # not in place unless asked
    touched = out.flatten(1).ne(0).any(1)
    assert 0.22 < touched.double().mean().item() < 0.28
    mask = out[touched, 0] != 0  # (k, H, W)
    rows, cols = mask.any(2), mask.any(1)
    h, w = rows.sum(1), cols.sum(1)
    assert torch.equal(mask.sum((1, 2)), h * w)  # a single rectangle
    area = (h * w).double() / 1024
    assert area.min() >= 0.015 and area.max() <= 0.36  # 0.02..1/3 up to rounding
    assert (w < 32).all() and (h < 32).all()
    rng = random.Random(0)
    ref = [timm_erase_params(rng) for _ in range(20000)]
    ref_area = torch.tensor([p[2] * p[3] / 1024 for p in ref if p is not None], dtype=torch.float64)
    assert area.mean().item() == pytest.approx(ref_area.mean().item(), abs=0.01)
    noise = out[touched][out[touched] != 0]
    assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02  # per-pixel N(0, 1)


def test_erasing_dispatches_erase_the_same_boxes_in_place_or_not():
    x = random_images(256).float()
    masks = []
    for dispatch in ("subset", "mask"):
        for inplace in (False, True):
            xi = x.clone()
            out = A.random_erasing(xi, gen(5), dispatch=dispatch, inplace=inplace)
            assert (out is xi) == inplace
            masks.append(out != x)
    assert all(torch.equal(m, masks[0]) for m in masks) and masks[0].any()


def test_erase_boxes_match_timms_logic():
    erase, top, left, h, w = A.sample_erase_boxes(gen(0), 5000, 32, 32)
    assert ((top + h <= 32) & (left + w <= 32) & (top >= 0) & (left >= 0))[erase].all()
    aspect = (h.double() / w.double())[erase]
    assert aspect.min() >= 0.25 and aspect.max() <= 4.0  # 0.3..1/0.3 up to rounding


# ---------------------------------------------------------------------- the pipeline
def test_augment_batch_with_every_stage_off_is_normalise_and_smooth():
    x, y = random_images(16), torch.arange(16) % 10
    out, t = A.augment_batch(x, y, gen(0), scaling=False, flip=False, randaug=False, mixup=False, erasing=False)
    assert torch.equal(out, A.normalize(x)) and torch.equal(t, A.smooth_targets(y, 10, 0.1))


@pytest.mark.parametrize("stage", ["scaling", "flip", "randaug", "mixup", "erasing"])
def test_augment_batch_each_stage_can_be_toggled(stage):
    x, y = random_images(32), torch.arange(32) % 10
    off = dict(scaling=False, flip=False, randaug=False, mixup=False, erasing=False)
    base, base_t = A.augment_batch(x, y, gen(0), **off)
    out, t = A.augment_batch(x, y, gen(0), **{**off, stage: True})
    assert out.dtype == torch.float32 and out.shape == x.shape and t.shape == (32, 10)
    assert torch.allclose(t.sum(1), torch.ones(32))
    assert not torch.equal(out, base)
    if stage == "mixup":
        assert not torch.equal(t, base_t)
    else:
        assert torch.equal(t, base_t)
    if stage == "flip":
        flipped = A.normalize(x.flip(3))
        assert ((out == base).flatten(1).all(1) | (out == flipped).flatten(1).all(1)).all()


def test_augment_batch_is_reproducible_from_the_generator():
    x, y = random_images(16), torch.arange(16) % 10
    a, ta = A.augment_batch(x, y, gen(7))
    b, tb = A.augment_batch(x, y, gen(7))
    c, _ = A.augment_batch(x, y, gen(8))
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c)


def test_soft_target_cross_entropy_equals_label_smoothed_cross_entropy():
    logits, y = torch.randn(8, 10, generator=gen(0)), torch.arange(8)
    loss = A.soft_target_cross_entropy(logits, A.smooth_targets(y, 10, 0.1))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-6)

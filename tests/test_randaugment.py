"""RandAugment: each op on crafted inputs, the level → argument tables, and the per-image sampling."""
import numpy as np
import pytest
import torch
from PIL import Image

from cmx.augment import randaugment as ra

FILL = (125, 123, 114)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_images(n=8, seed=0, h=32, w=32):
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=gen(seed))


def constant(value, n=1, h=32, w=32):
    return torch.full((n, 3, h, w), value, dtype=torch.uint8)


# ---------------------------------------------------------------------- the tables
def test_tables_list_timms_fifteen_increasing_ops():
    assert ra.RAND_INCREASING_OPS == (
        "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
        "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
        "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
    assert set(ra.LEVEL_TO_ARG) == set(ra.NAME_TO_OP) == set(ra.RAND_INCREASING_OPS)


@pytest.mark.parametrize("name, level, sign, expected", [
    ("Rotate", 9.0, 1.0, 27.0), ("Rotate", 10.0, -1.0, -30.0),
    ("ShearX", 10.0, -1.0, -0.3), ("TranslateYRel", 10.0, 1.0, 0.45),
    ("ColorIncreasing", 9.0, 1.0, 1.81), ("ColorIncreasing", 9.0, -1.0, 0.19),
    ("ContrastIncreasing", 10.0, -1.0, 0.1),  # 1 − 0.9 = 0.1, the floor
    ("PosterizeIncreasing", 0.0, 1.0, 4), ("PosterizeIncreasing", 9.0, 1.0, 1),
    ("PosterizeIncreasing", 10.0, 1.0, 0),
    ("SolarizeIncreasing", 0.0, 1.0, 256), ("SolarizeIncreasing", 9.0, 1.0, 26),
    ("SolarizeIncreasing", 10.0, 1.0, 0),
    ("SolarizeAdd", 9.0, 1.0, 99), ("SolarizeAdd", 10.0, 1.0, 110),
])
def test_level_to_arg_matches_timm_formulas(name, level, sign, expected):
    arg = ra.LEVEL_TO_ARG[name](torch.tensor([level], dtype=torch.float64), torch.tensor([sign], dtype=torch.float64))
    assert arg.item() == pytest.approx(expected)


# ---------------------------------------------------------------------- colour ops
def test_invert_is_255_minus_x():
    x = random_images()
    assert torch.equal(ra.invert(x), 255 - x)


def test_posterize_keeps_the_top_bits_and_zero_bits_is_black():
    x = random_images()
    assert torch.equal(ra.posterize(x, 4), x & 0xF0)
    assert torch.equal(ra.posterize(x, 1), x & 0x80)
    assert torch.equal(ra.posterize(x, 8), x)
    assert ra.posterize(x, 0).max() == 0  # Pillow < 11 behaviour, defined explicitly
    per_image = ra.posterize(x[:2], torch.tensor([2, 0]))
    assert torch.equal(per_image[0], x[0] & 0xC0) and per_image[1].max() == 0


def test_solarize_inverts_at_and_above_the_threshold():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16).contiguous()
    out = ra.solarize(x, 100)
    v = x[0, 0].flatten().long()
    o = out[0, 0].flatten().long()
    assert torch.equal(o[v < 100], v[v < 100]) and torch.equal(o[v >= 100], 255 - v[v >= 100])
    assert torch.equal(ra.solarize(x, 256), x)
    assert torch.equal(ra.solarize(x, 0), 255 - x)


def test_solarize_add_adds_below_128_and_saturates():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16).contiguous()
    o = ra.solarize_add(x, 110)[0, 0].flatten().long()
    v = torch.arange(256)
    assert torch.equal(o[v < 128], (v[v < 128] + 110).clamp(max=255))
    assert torch.equal(o[v >= 128], v[v >= 128])


def test_auto_contrast_stretches_each_channel_to_full_range():
    x = torch.randint(50, 151, (4, 3, 32, 32), dtype=torch.uint8, generator=gen())
    x[:, :, 0, 0], x[:, :, 0, 1] = 50, 150  # each channel spans exactly 50..150
    x[3, 2] = 77  # a flat channel is left unchanged
    out = ra.auto_contrast(x)
    assert out[:3].amin((2, 3)).eq(0).all() and out[:3].amax((2, 3)).eq(255).all()
    assert torch.equal(out[3, 2], x[3, 2])
    scale = 255.0 / 100  # Pillow's lut: int(i·scale − 50·scale), truncated
    lut = torch.tensor([min(255, max(0, int(i * scale + -50 * scale))) for i in range(256)])
    assert torch.equal(out[0, 0].long(), lut[x[0, 0].long()])


def test_equalize_spreads_a_skewed_histogram_over_the_full_range():
    # 1024 pixels on the 64 darkest levels, 16 each
    x = torch.arange(64, dtype=torch.uint8).repeat_interleave(16).view(1, 1, 32, 32).expand(2, 3, 32, 32).clone()
    out = ra.equalize(x)
    lut = out[0, 0].flatten().view(64, 16)[:, 0].long()  # where each input level went
    assert (lut.diff() >= 0).all() and lut[0] == 0 and lut[-1] == 255  # monotone, full range
    # Pillow: step = (1024 − 16) // 255 = 3, level k → (1 + 16k) // 3, clipped to 255
    assert torch.equal(lut, ((1 + 16 * torch.arange(64)) // 3).clamp(max=255))
    assert out[0, 0].float().std() > 4 * x[0, 0].float().std()
    flat = constant(90)
    assert torch.equal(ra.equalize(flat), flat)


def test_blend_ops_at_their_end_points():
    x = random_images(4)
    lum = ((19595 * x[:, 0].int() + 38470 * x[:, 1].int() + 7471 * x[:, 2].int() + 0x8000) >> 16).to(torch.uint8)
    assert torch.equal(ra.color(x, 0.0), lum.unsqueeze(1).expand_as(x))
    assert torch.equal(ra.brightness(x, 0.0), torch.zeros_like(x))
    mean = (lum.flatten(1).double().mean(1) + 0.5).floor().to(torch.uint8).view(-1, 1, 1, 1)
    assert torch.equal(ra.contrast(x, 0.0), mean.expand_as(x))
    for op in (ra.color, ra.brightness, ra.contrast, ra.sharpness):
        assert torch.equal(op(x, 1.0), x)


def test_brightness_truncates_and_saturates_like_pillow():
    x = torch.tensor([10, 11, 200], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert ra.brightness(x, 0.55)[0, :, 0, 0].tolist() == [5, 6, 110]
    assert ra.brightness(x, 1.55)[0, :, 0, 0].tolist() == [15, 17, 255]


def test_sharpness_blends_with_pillows_smooth_filter_and_keeps_the_border():
    x = torch.zeros(1, 3, 5, 5, dtype=torch.uint8)
    x[0, :, 2, 2] = 130
    smooth = ra.sharpness(x, 0.0)  # factor 0 = the degenerate (smoothed) image
    assert smooth[0, 0, 2, 2] == 50  # 130·5/13 = 50
    assert smooth[0, 0, 1, 1] == 10  # 130/13 = 10
    img = random_images(2)
    out = ra.sharpness(img, 1.9)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert torch.equal(out[..., border], img[..., border])
    assert torch.equal(ra.sharpness(constant(77), 1.9), constant(77))


# ---------------------------------------------------------------------- geometric ops
@pytest.mark.parametrize("bicubic", [False, True])
def test_rotate_90_is_an_exact_counter_clockwise_quarter_turn(bicubic):
    x = random_images(3)
    assert torch.equal(ra.rotate(x, 90.0, bicubic=bicubic), torch.rot90(x, 1, dims=(2, 3)))


@pytest.mark.parametrize("bicubic", [False, True])
def test_rotate_keeps_a_constant_image_inside_and_fills_the_corners(bicubic):
    out = ra.rotate(constant(200), 30.0, bicubic=bicubic, fill=FILL)
    assert (out[0, :, 8:24, 8:24] == 200).all()  # centre unchanged
    assert out[0, :, 0, 0].tolist() == list(FILL)  # corners come from outside the image
    assert ((out == 200) | (out == torch.tensor(FILL, dtype=torch.uint8).view(1, 3, 1, 1))).all()


def test_rotate_maps_a_centred_disc_onto_itself():
    yy, xx = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    r = ((yy - 16) ** 2 + (xx - 16) ** 2).sqrt()  # distance from Pillow's rotation centre (16, 16)
    x = ((r < 10).to(torch.uint8) * 255).expand(1, 3, 32, 32).contiguous()
    for degrees, bicubic in ((23.0, False), (-17.0, True)):
        out = ra.rotate(x, degrees, bicubic=bicubic, fill=(0, 0, 0))
        # only the rim changes (bicubic rings by a few levels next to it)
        assert (out[..., r < 8] >= 250).all() and (out[..., r > 12.5] <= 5).all()


@pytest.mark.parametrize("bicubic", [False, True])
def test_translate_shifts_by_pct_times_size_and_fills(bicubic):
    x = random_images(2)
    fill = torch.tensor(FILL, dtype=torch.uint8).view(1, 3, 1, 1)
    out = ra.translate_x_rel(x, 0.25, bicubic=bicubic)  # 8 px: content moves left
    assert torch.equal(out[..., :24], x[..., 8:]) and (out[..., 24:] == fill).all()
    out = ra.translate_x_rel(x, -0.125, bicubic=bicubic)  # 4 px to the right
    assert torch.equal(out[..., 4:], x[..., :28]) and (out[..., :4] == fill).all()
    out = ra.translate_y_rel(x, 0.25, bicubic=bicubic)  # 8 px up
    assert torch.equal(out[:, :, :24], x[:, :, 8:]) and (out[:, :, 24:] == fill).all()


def test_translate_by_half_a_pixel_averages_neighbours_bilinearly():
    x = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    x[..., 1] = 100
    out = ra.translate_x_rel(x, 0.5 / 4)  # half a pixel
    assert out[0, 0, 0, :3].tolist() == [50, 50, 0]


def test_shears_only_move_along_their_axis():
    rows = torch.arange(0, 256, 8, dtype=torch.uint8).view(1, 1, 32, 1).expand(1, 3, 32, 32).contiguous()
    fill = torch.tensor(FILL, dtype=torch.uint8).view(1, 3, 1, 1)
    out = ra.shear_x(rows, 0.3)  # each row slides sideways: its value is kept (or fill)
    kept = out != fill
    assert torch.equal(out[kept], rows.expand_as(out)[kept]) and (~kept).any()
    assert torch.equal(ra.shear_x(rows, 0.0), rows)
    assert torch.equal(ra.shear_y(rows.transpose(2, 3), 0.0), rows.transpose(2, 3))


def test_affine_single_axis_shortcut_equals_the_full_2d_sampler():
    x = random_images(4)
    shear, shift = torch.tensor([0.3, -0.2, 0.1, 0.27]), torch.tensor([0.0, 3.3, -1.7, 0.4])
    coeffs = ra._affine_coeffs(4, x.device, b=shear, c=shift)
    bic = torch.tensor([True, False, True, False])
    assert torch.equal(ra._affine(x, coeffs, bic, FILL, along="x"), ra._affine(x, coeffs, bic, FILL))


@pytest.mark.parametrize("along", [None, "x", "y"])
def test_affine_with_one_filter_for_the_batch_equals_the_per_image_sampler(along):
    x = smooth_and_noisy_images()
    n = x.shape[0]
    coeffs = ra._affine_coeffs(n, x.device, a=0.96, b=0.28 if along != "y" else 0.0, c=-3.7,
                               d=-0.28 if along != "x" else 0.0, e=0.96 if along is None else 1.0, f=5.2)
    if along == "x":
        coeffs[:, 0], coeffs[:, 4] = 1.0, 1.0
    if along == "y":
        coeffs[:, 0], coeffs[:, 4] = 1.0, 1.0
    for bicubic in (False, True):
        per_image = ra._affine(x, coeffs, torch.full((n,), bicubic), FILL, along=along)
        assert torch.equal(ra._affine(x, coeffs, bicubic, FILL, along=along), per_image)


# ---------------------------------------------------------------------- against Pillow itself
def pillow_reference(name, arg, bicubic):
    from PIL import Image, ImageEnhance, ImageOps
    resample = Image.BICUBIC if bicubic else Image.BILINEAR

    def affine(im, *coeffs):
        return im.transform(im.size, Image.AFFINE, coeffs, resample=resample, fillcolor=FILL)

    return {
        "AutoContrast": ImageOps.autocontrast,
        "Equalize": ImageOps.equalize,
        "Invert": ImageOps.invert,
        "Rotate": lambda im: im.rotate(arg, resample=resample, fillcolor=FILL),
        "PosterizeIncreasing": lambda im: ImageOps.posterize(im, arg),
        "SolarizeIncreasing": lambda im: ImageOps.solarize(im, arg),
        "SolarizeAdd": lambda im: im.point([min(255, i + arg) if i < 128 else i for i in range(256)] * 3),
        "ColorIncreasing": lambda im: ImageEnhance.Color(im).enhance(arg),
        "ContrastIncreasing": lambda im: ImageEnhance.Contrast(im).enhance(arg),
        "BrightnessIncreasing": lambda im: ImageEnhance.Brightness(im).enhance(arg),
        "SharpnessIncreasing": lambda im: ImageEnhance.Sharpness(im).enhance(arg),
        "ShearX": lambda im: affine(im, 1, arg, 0, 0, 1, 0),
        "ShearY": lambda im: affine(im, 1, 0, 0, arg, 1, 0),
        "TranslateXRel": lambda im: affine(im, 1, 0, arg * 32, 0, 1, 0),
        "TranslateYRel": lambda im: affine(im, 1, 0, 0, 0, 1, arg * 32),
    }[name]


def smooth_and_noisy_images():
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = torch.stack([xx * 8, yy * 7 + 10, (xx + yy) * 3 + 20]).clamp(0, 255).to(torch.uint8)
    return torch.cat([smooth.unsqueeze(0), random_images(3, seed=5)])


@pytest.mark.parametrize("name", ra.RAND_INCREASING_OPS)
@pytest.mark.parametrize("level, sign, bicubic", [(7.3, 1.0, False), (9.6, -1.0, True)])
def test_op_equals_pillow_pixel_for_pixel(name, level, sign, bicubic):
    x = smooth_and_noisy_images()
    fn = ra.LEVEL_TO_ARG[name]
    arg = None if fn is None else fn(torch.tensor([level], dtype=torch.float64), torch.tensor([sign])).item()
    ref = pillow_reference(name, arg, bicubic)
    expected = torch.stack([torch.from_numpy(np.array(ref(Image.fromarray(im)))).permute(2, 0, 1)
                            for im in x.permute(0, 2, 3, 1).numpy()])
    assert torch.equal(ra.apply_op(name, x, level, sign, bicubic, FILL), expected)


# ---------------------------------------------------------------------- rand_augment sampling
def test_same_generator_seed_gives_the_same_batch():
    x = random_images(16)
    a, b = ra.rand_augment(x, gen(3)), ra.rand_augment(x, gen(3))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    assert not torch.equal(a, ra.rand_augment(x, gen(4)))


def test_subset_and_mask_dispatch_agree():
    x = random_images(12)
    assert torch.equal(ra.rand_augment(x, gen(1), dispatch="subset"), ra.rand_augment(x, gen(1), dispatch="mask"))


def test_each_image_draws_its_own_op():
    x = random_images(1).expand(64, 3, 32, 32).contiguous()  # 64 copies of one image
    out = ra.rand_augment(x, gen(0), num_ops=1, prob=1.0)
    distinct = {bytes(o.numpy()) for o in out}
    assert len(distinct) >= 20  # 15 ops × signs × interpolations, all per image


def test_prob_zero_is_identity_and_prob_gates_each_op():
    x = random_images(4)
    assert torch.equal(ra.rand_augment(x, gen(0), prob=0.0), x)
    many = constant(10, n=2000, h=2, w=2)
    out = ra.rand_augment(many, gen(0), num_ops=1, prob=0.5, ops=("Invert",))
    frac = (out[:, 0, 0, 0] == 245).float().mean().item()
    assert 0.45 < frac < 0.55


def test_signs_are_random_per_image():
    x = constant(100, n=2000, h=2, w=2)
    out = ra.rand_augment(x, gen(0), num_ops=1, prob=1.0, magnitude_std=0.0, ops=("BrightnessIncreasing",))
    v = out[:, 0, 0, 0]
    assert set(v.unique().tolist()) == {19, 181}  # factors 0.19 and 1.81 (float32, truncated)
    assert 0.45 < (v == 181).float().mean().item() < 0.55


def test_magnitude_noise_is_clipped_at_10_which_posterizes_to_black():
    # level ~ N(9, 0.5) clipped to [0, 10]: 1 bit for 7.5 ≤ level < 10, 0 bits (black) at the clip, P ≈ 2.3%
    x = constant(255, n=4000, h=1, w=1)
    out = ra.rand_augment(x, gen(0), num_ops=1, prob=1.0, ops=("PosterizeIncreasing",))[:, 0, 0, 0]
    assert set(out.unique().tolist()) <= {0, 128, 192}
    assert 0.012 < (out == 0).float().mean().item() < 0.035
    assert (out == 128).float().mean().item() > 0.95


def test_interpolation_is_drawn_per_application():
    x = random_images(1).expand(200, 3, 32, 32).contiguous()
    out = ra.rand_augment(x, gen(0), num_ops=1, prob=1.0, magnitude_std=0.0, ops=("Rotate",))
    variants = {bytes(o.numpy()) for o in out}
    expected = {bytes(ra.rotate(x[:1], d, bicubic=b)[0].numpy()) for d in (27.0, -27.0) for b in (False, True)}
    assert variants == expected  # ±27°, bilinear or bicubic


def test_rejects_non_uint8_input():
    with pytest.raises(ValueError):
        ra.rand_augment(torch.zeros(2, 3, 8, 8), gen())

"""The depthwise convolution of Eq. 2, computed on CPU by whichever path is fastest for its shape.

Why: on CPU the depthwise convolution's cost is not proportional to its FLOPs. oneDNN's depthwise kernel
leaves its fast (JIT) path for some shapes — measured on an Intel Xeon with AMX (64 ch, 16², batch 128,
fp32): at k15 (padding 7) NCHW forward takes 122 ms against 2.8 ms at k13, and the weight gradient
84–121 ms against 27 ms — and its weight gradient is slow at every k ≥ 5 (6–27 ms, where the forward takes
0.6–7 ms). The same three products are also convolutions that oneDNN's fast forward kernel computes:

    forward      y  = conv(pad(x), w)                                  (valid convolution, explicit padding)
    input grad   dx = conv(pad'(g), flip(w))                           (pad' swaps the two sides' padding)
    weight grad  dW[c] = Σ_n conv(pad(x)[n, c], g[n, c])               (x viewed as (1, N·C, H', W'),
                                                                        g as (N·C, 1, H, W), groups N·C)

oneDNN's own channels_last weight gradient is fast whenever the kernel is at most 3 wide, at any height (one
layer, 64 ch, 16², batch 128, fp32, one thread, AVX-512 EPYC: 1.5 ms at 5×3 and 2.5 ms at 9×3 against 18 ms
at 5×5 and 39 ms at 9×9), so a k×k weight gradient is also ⌈k/3⌉ of them, one per strip of 3 columns
(`strips`): strip b is the k×3 weight gradient of the input shifted b columns (one crop-and-pad copy each).
Measured there: 7.0 / 13.3 / 29.7 ms at k5 / k9 / k15 against 12.3 / 18.3 / 32.6 for the grouped form and
15 / 38 / 537 for oneDNN's k×k; in NCHW the grouped form stays faster (6.6 / 12.0 / 22.8 against 10.9 /
21.0 / 43.9).

Padding explicitly keeps every convolution at padding 0, where the fast kernel applies at every k (the
k15 cliff is the padding, not the kernel). An even kernel is also the odd one a size larger whose first
row and column are zero ("same" padding puts even k's extra zero after, so k8 is k9 with w9[0, :] =
w9[:, 0] = 0): its convolution and input gradient are the k+1 ones, its weight gradient theirs without the
first row and column, and oneDNN's symmetric kernels are faster at k9 than its asymmetric ones at k8 (one
256-channel 32² layer, batch 64, fp32, 2 threads on an AVX-512 EPYC: 305 ms at k9 against 363–455 ms at k8
channels_last, 304 against 390–900 NCHW). The `odd-` paths compute even k that way.

Which combination wins depends on the CPU, the layout, the precision and the shape, so `PATHS` names
them and the CPU probe (tune.py) times each on the run's shape and picks one per machine and shape;
CUDA (cuDNN) and inference always use `nn.Conv2d` as is.

The paths compute the same convolution: forward, input and weight gradients equal PyTorch's to float
rounding (tests/test_depthwise.py). They differ in summation order, so a run's numbers depend (within
rounding) on the path the probe chose; the path is kept in the checkpoint so a resumed run keeps it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# name → (forward by explicit padding, input grad by explicit padding, weight grad: "grouped" | "strips")
BASE_PATHS = {
    "stock": None,                             # nn.Conv2d: oneDNN's kernels throughout
    "wgrad": (False, False, "grouped"),        # oneDNN forward + input grad, weight grad as a grouped conv
    "padded": (True, True, "grouped"),         # all three as padding-0 convolutions
    "padded-wgrad": (True, False, "grouped"),  # padded forward, oneDNN input grad, grouped weight grad
    "strips": (False, False, "strips"),        # oneDNN forward + input grad, weight grad by k×3 strips
    "padded-strips": (True, False, "strips"),  # padded forward, oneDNN input grad, weight grad by strips
}
STRIP = 3  # the widest kernel oneDNN's channels_last weight gradient computes fast at any height
ODD = "odd-"  # odd-<base>: an even kernel computed as the k+1 one (first row and column zero) by <base>
PATHS = {**BASE_PATHS, **{ODD + name: how for name, how in BASE_PATHS.items()}}
DEFAULT_PATH = "stock"


def paths_for(k: int) -> list[str]:
    """The paths worth timing at kernel size k: the odd- ones only for even k (for odd k they are their base)."""
    return list(PATHS) if k % 2 == 0 else list(BASE_PATHS)


def same_padding(k: int) -> tuple[int, int]:
    """PyTorch's padding="same" for stride 1: (before, after); even k puts the extra one after."""
    before = (k - 1) // 2
    return before, k - 1 - before


def _pad(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    return F.pad(t, (before, after, before, after))


def strip_offsets(k: int) -> list[int]:
    """The first column of each k×STRIP strip covering a k×k kernel: every STRIP columns, the last one moved
    left to end at column k-1 (it overlaps the one before, whose columns it computes again, equal)."""
    width = min(STRIP, k)
    return sorted({*range(0, k - width + 1, width), k - width})


def _weight_grad_by_strips(x: torch.Tensor, grad_y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The depthwise weight gradient as ⌈k/3⌉ k×3 weight gradients by oneDNN's kernel (fast at any height in
    channels_last), strip b on the input cropped/padded to columns b - before … b + W + 1 - before of x."""
    c, k = weight.shape[0], weight.shape[-1]
    before, after = same_padding(k)
    width = min(STRIP, k)
    grad_w = weight.new_empty(weight.shape)
    strip = weight.new_empty(c, 1, k, width)  # the shape oneDNN is asked for; its values are not read
    for b in strip_offsets(k):
        # F.pad crops where a side is negative: columns [b - before, b - before + W + width - 1) of x, a new
        # dense tensor in x's memory format (what oneDNN's kernel wants; no further copy).
        xs = F.pad(x, (before - b, b + width - 1 - before, before, after))
        grad_w[..., b:b + width] = torch.ops.aten.convolution_backward(
            grad_y, xs, strip, None, [1, 1], [0, 0], [1, 1], False, [0, 0], c, [False, True, False])[1]
    return grad_w


class _DepthwiseConvCPU(torch.autograd.Function):
    """y = depthwise conv2d(x, weight, bias), stride 1, "same" padding, by the products `how` names."""

    @staticmethod
    def forward(ctx, x, weight, bias, how):
        pad_fwd = how[0]
        c, k = weight.shape[0], weight.shape[-1]
        before, after = same_padding(k)
        ctx.save_for_backward(x, weight)
        ctx.how = how
        if pad_fwd or before != after:
            return F.conv2d(_pad(x, before, after), weight, bias, groups=c)
        return F.conv2d(x, weight, bias, padding=before, groups=c)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        _, pad_gx, weight_grad = ctx.how
        n, c, h, w = x.shape
        k = weight.shape[-1]
        before, after = same_padding(k)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if pad_gx or before != after:
                grad_x = F.conv2d(_pad(grad_y, after, before), weight.flip(-1, -2), groups=c)
            else:
                grad_x = torch.ops.aten.convolution_backward(
                    grad_y, x, weight, None, [1, 1], [before, before], [1, 1], False, [0, 0], c,
                    [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            if weight_grad == "strips":
                grad_w = _weight_grad_by_strips(x, grad_y, weight)
            else:
                xp = _pad(x, before, after).contiguous()
                per_image = F.conv2d(xp.view(1, n * c, h + k - 1, w + k - 1),
                                     grad_y.contiguous().view(n * c, 1, h, w), groups=n * c)  # (1, N·C, k, k)
                grad_w = per_image.view(n, c, k, k).sum(0).unsqueeze(1)
        if ctx.needs_input_grad[2]:
            grad_b = grad_y.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for `device_type`, or None when autocast is off."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        on = device_type == "cpu" and torch.is_autocast_cpu_enabled()
    if not on:
        return None
    try:
        return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):
        return torch.get_autocast_cpu_dtype()


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d(channels, channels, k, groups=channels, padding="same"): same parameters and outputs,
    computed on CPU by `self.path` (one of PATHS; the engine sets it from the probe)."""

    def __init__(self, channels: int, kernel_size: int, path: str = DEFAULT_PATH):
        super().__init__(channels, channels, kernel_size, groups=channels, padding="same")
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.path == "stock" or x.device.type != "cpu" or not torch.is_grad_enabled():
            return super().forward(x)
        dtype = autocast_dtype("cpu")
        if dtype is None:
            return self._by_path(x, self.weight, self.bias)
        # What autocast does to conv2d (cast inputs, weight and bias to its dtype), done here so the
        # custom backward runs in that dtype too.
        with torch.autocast("cpu", enabled=False):
            return self._by_path(x.to(dtype), self.weight.to(dtype), self.bias.to(dtype))

    def _by_path(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        how = PATHS[self.path]
        if self.path.startswith(ODD) and weight.shape[-1] % 2 == 0:
            weight = F.pad(weight, (1, 0, 1, 0))  # autograd returns the weight gradient without row/column 0
        if how is None:  # odd-stock: oneDNN's kernels, at the (now odd) kernel's symmetric padding
            return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=self.groups)
        return _DepthwiseConvCPU.apply(x, weight, bias, how)


def set_path(model: nn.Module, path: str) -> None:
    """Compute every depthwise convolution of `model` by `path`."""
    if path not in PATHS:
        raise ValueError(f"unknown depthwise path {path!r} (one of {', '.join(PATHS)})")
    for module in model.modules():
        if isinstance(module, DepthwiseConv2d):
            module.path = path

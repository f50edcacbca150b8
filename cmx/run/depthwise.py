"""The depthwise convolution of Eq. 2, with a faster weight gradient on CPU.

Why: on CPU, oneDNN's depthwise weight gradient is the slowest kernel of a ConvMixer training step (about
40% of a ConvMixer-64/4 p2 k5 step). The same gradient is a grouped convolution of each image-channel
plane with its own output gradient:

    dL/dW[c, i, j] = Σ_n Σ_{y,x} x[n, c, y + i − P, x + j − P] · g[n, c, y, x]
                   = Σ_n conv2d(x viewed as (1, N·C, H, W), g viewed as (N·C, 1, H, W), padding P, groups N·C)

which oneDNN's forward kernel computes 1.7–2.4× faster for k ≥ 5 (fwd + bwd of one layer, channels_last,
measured on this machine: 64 ch 16² k5 at batch 128: 14.8 → 8.7 ms; 256 ch 32² k9 at batch 64: 264 → 110 ms;
k15: 2.37 → 1.11 s; but k3: 29 → 64 ms, so k3 keeps the stock kernel). The input gradient stays oneDNN's.
Forward, parameters and the maths are unchanged (gradients agree to float32 rounding; tests check it).

Only CPU float32 training with odd k ≥ 5 takes this path; CUDA (cuDNN), autocast, even k (asymmetric
"same" padding) and inference use `nn.Conv2d` as is.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

FAST_MIN_KERNEL = 5  # measured: at k=3 the grouped form is slower than oneDNN's own weight gradient


class _DepthwiseConvCPU(torch.autograd.Function):
    """y = depthwise conv2d(x, weight, bias), stride 1, symmetric 'same' padding (odd k)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        k = weight.shape[-1]
        pad = k // 2
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_y, x, weight, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], c, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            per_image = F.conv2d(x.contiguous().view(1, n * c, h, w), grad_y.contiguous().view(n * c, 1, h, w),
                                 padding=pad, groups=n * c)  # (1, N·C, k, k)
            grad_w = per_image.view(n, c, k, k).sum(0).unsqueeze(1)
        if ctx.needs_input_grad[2]:
            grad_b = grad_y.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        return device_type == "cpu" and torch.is_autocast_cpu_enabled()


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d(channels, channels, k, groups=channels, padding="same"): same parameters and outputs,
    with the fast weight gradient above where it applies."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__(channels, channels, kernel_size, groups=channels, padding="same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        if (x.device.type == "cpu" and x.dtype == torch.float32 and torch.is_grad_enabled()
                and k % 2 == 1 and k >= FAST_MIN_KERNEL and self.kernel_size[0] == self.kernel_size[1]
                and not _autocast_on("cpu")):
            return _DepthwiseConvCPU.apply(x, self.weight, self.bias)
        return super().forward(x)

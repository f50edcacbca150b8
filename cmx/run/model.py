"""ConvMixer (paper Fig. 3, Eq. 1-3) with the Table 7 ablation switches. Knows nothing of files or flags.

    z0  = Norm(act(Conv_{3→h}(X, kernel p, stride p)))                    (Eq. 1)
    z'  = Norm(act(DepthwiseConv_k(z))) + z        residual "eq2"         (Eq. 2)
    z+  = Norm(act(PointwiseConv(z')))  [+ z' when residual "both"]       (Eq. 3)
    out = Linear(GlobalAvgPool(z_d))

With BatchNorm the parameter count equals Eq. 4 exactly: h·[d·(k² + h + 6) + 3·p² + n + 3] + n.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import eq4_params  # noqa: F401 (re-exported: the model tests check it)
from .depthwise import DepthwiseConv2d


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels at each spatial position (ConvNeXt/timm style, eps 1e-6).

    The paper does not publish its LayerNorm variant; this reading keeps Eq. 4's count (h weights + h
    biases, like BatchNorm) and matches how ViT/MLP-Mixer normalise each token. (B, C, H, W) in and out.
    """

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


NORMS = {"batch": nn.BatchNorm2d, "layer": LayerNorm2d}
ACTS = {"gelu": nn.GELU, "relu": nn.ReLU}


def conv_act_norm(conv: nn.Conv2d, act: str, norm: str) -> nn.Sequential:
    """The paper's unit: convolution → activation → post-activation norm."""
    return nn.Sequential(conv, ACTS[act](), NORMS[norm](conv.out_channels))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


def mixer_block(h: int, k: int, act: str, norm: str, residual: str) -> nn.Sequential:
    """Eq. 2 (depthwise, spatial mixing) then Eq. 3 (pointwise, channel mixing)."""
    # padding="same" gives PyTorch's asymmetric padding for even k (Table 8 uses k=8).
    depthwise = conv_act_norm(DepthwiseConv2d(h, k), act, norm)  # nn.Conv2d with a faster CPU backward
    pointwise = conv_act_norm(nn.Conv2d(h, h, 1), act, norm)
    if residual in ("eq2", "both"):
        depthwise = Residual(depthwise)
    if residual == "both":
        pointwise = Residual(pointwise)
    return nn.Sequential(depthwise, pointwise)


class ConvMixer(nn.Module):
    """ConvMixer-h/d with patch size p and depthwise kernel k. (B, 3, H, W) → (B, n_classes) logits."""

    def __init__(self, h: int = 256, d: int = 8, p: int = 1, k: int = 9, *, n_classes: int = 10,
                 norm: str = "batch", act: str = "gelu", residual: str = "eq2"):
        super().__init__()
        self.embed = conv_act_norm(nn.Conv2d(3, h, p, stride=p), act, norm)  # Eq. 1
        self.blocks = nn.Sequential(*[mixer_block(h, k, act, norm, residual) for _ in range(d)])
        self.head = nn.Linear(h, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.blocks(self.embed(x))  # (B, h, H/p, W/p), isotropic: the resolution never changes
        return self.head(z.mean((2, 3)))  # global average pool → (B, h) → (B, n_classes)


def build_model(config) -> ConvMixer:
    """The model a RunConfig describes."""
    return ConvMixer(config.h, config.d, config.p, config.k, norm=config.norm, act=config.act,
                     residual=config.residual)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

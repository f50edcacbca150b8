"""The fast CPU depthwise weight gradient gives nn.Conv2d's gradients, and only runs where it applies."""
import pytest
import torch
import torch.nn.functional as F

from cmx.run import depthwise
from cmx.run.config import RunConfig
from cmx.run.model import build_model


def grads(conv_fn, x, w, b, g):
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    return torch.autograd.grad(conv_fn(x, w, b), (x, w, b), g)


@pytest.mark.parametrize("k,h,channels_last", [(5, 8, True), (7, 9, False), (9, 12, True), (15, 6, True)])
def test_gradients_equal_the_stock_convolution(k, h, channels_last):
    torch.manual_seed(k)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 4, h, h).contiguous(memory_format=fmt)
    w, b, g = torch.randn(4, 1, k, k), torch.randn(4), torch.randn(3, 4, h, h).contiguous(memory_format=fmt)
    stock = grads(lambda x, w, b: F.conv2d(x, w, b, padding="same", groups=4), x, w, b, g)
    fast = grads(depthwise._DepthwiseConvCPU.apply, x, w, b, g)
    for a, f in zip(stock, fast):
        torch.testing.assert_close(f, a, rtol=1e-5, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's note on even k
def test_the_module_takes_the_fast_path_only_where_it_applies(monkeypatch):
    calls = []
    real = depthwise._DepthwiseConvCPU.apply
    monkeypatch.setattr(depthwise._DepthwiseConvCPU, "apply", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 4, 8, 8)
    depthwise.DepthwiseConv2d(4, 5)(x)
    assert calls == [1]
    for conv, ctx in ((depthwise.DepthwiseConv2d(4, 3), torch.enable_grad()),  # k3: stock is faster
                      (depthwise.DepthwiseConv2d(4, 8), torch.enable_grad()),  # even k: asymmetric padding
                      (depthwise.DepthwiseConv2d(4, 5), torch.no_grad()),  # inference
                      (depthwise.DepthwiseConv2d(4, 5), torch.autocast("cpu", dtype=torch.bfloat16))):
        with ctx:
            conv(x)
    assert calls == [1]


def test_a_convmixer_step_matches_the_stock_layer(monkeypatch):
    cfg = RunConfig(h=8, d=2, p=2, k=5)
    torch.manual_seed(0)
    model = build_model(cfg)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    F.cross_entropy(model(x), y).backward()
    fast = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.setattr(depthwise, "FAST_MIN_KERNEL", 99)  # every layer on the stock kernel
    F.cross_entropy(model(x), y).backward()
    for f, p in zip(fast, model.parameters()):
        torch.testing.assert_close(f, p.grad, rtol=1e-4, atol=1e-5)

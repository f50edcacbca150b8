"""Every CPU depthwise path (cmx/run/depthwise.py) computes nn.Conv2d's convolution and its gradients, in both
memory layouts, at odd and even k, in fp32 and under bf16 autocast; the module uses the path it is given."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cmx.run import depthwise
from cmx.config import CHOICES, RunConfig
from cmx.run.depthwise import PATHS, DepthwiseConv2d, set_path
from cmx.run.model import build_model

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's note on even k


def forward_and_grads(conv, x, g, dtype=None):
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        y = conv(x)
    grads = torch.autograd.grad(y, (x, conv.weight, conv.bias), g.to(y.dtype))
    return (y, *grads)


@pytest.mark.parametrize("path", [p for p in PATHS if p != "stock"])
@pytest.mark.parametrize("k", [2, 3, 4, 5, 7, 8, 9, 15])
@pytest.mark.parametrize("channels_last", [True, False])
def test_every_path_equals_the_stock_convolution_forward_and_both_gradients(path, k, channels_last):
    torch.manual_seed(k)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    stock = nn.Conv2d(6, 6, k, groups=6, padding="same")
    conv = DepthwiseConv2d(6, k, path=path)
    conv.load_state_dict(stock.state_dict())
    x, g = torch.randn(3, 6, 11, 11).contiguous(memory_format=fmt), torch.randn(3, 6, 11, 11)
    for ours, theirs in zip(forward_and_grads(conv, x, g), forward_and_grads(stock, x, g)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("path", [p for p in PATHS if p != "stock"])
@pytest.mark.parametrize("k", [5, 8, 15])
def test_under_bf16_autocast_every_path_computes_what_autocast_computes(path, k):
    torch.manual_seed(k)
    stock = nn.Conv2d(4, 4, k, groups=4, padding="same")
    conv = DepthwiseConv2d(4, k, path=path)
    conv.load_state_dict(stock.state_dict())
    x, g = torch.randn(2, 4, 10, 10), torch.randn(2, 4, 10, 10)
    ours, theirs = forward_and_grads(conv, x, g, torch.bfloat16), forward_and_grads(stock, x, g, torch.bfloat16)
    assert ours[0].dtype == theirs[0].dtype == torch.bfloat16
    assert [t.dtype for t in ours[2:]] == [torch.float32, torch.float32]  # parameters' gradients stay fp32
    for a, b in zip(ours, theirs):  # bf16 has 8 bits of mantissa: relative to the largest value
        assert (a.float() - b.float()).abs().max() <= 0.02 * b.float().abs().max()


def test_the_module_uses_its_path_only_when_training_on_cpu(monkeypatch):
    calls = []
    real = depthwise._DepthwiseConvCPU.apply
    monkeypatch.setattr(depthwise._DepthwiseConvCPU, "apply", lambda *a: calls.append(a[-1]) or real(*a))
    x = torch.randn(2, 4, 8, 8)
    DepthwiseConv2d(4, 5, path="padded")(x)
    assert calls == [PATHS["padded"]]
    DepthwiseConv2d(4, 5, path="stock")(x)
    with torch.no_grad():  # inference: oneDNN's forward
        DepthwiseConv2d(4, 5, path="padded")(x)
    assert len(calls) == 1


def test_set_path_reaches_every_block_and_the_flag_lists_the_same_paths():
    model = build_model(RunConfig(h=8, d=3, p=4, k=5))
    set_path(model, "padded-wgrad")
    paths = [m.path for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert paths == ["padded-wgrad"] * 3
    with pytest.raises(ValueError, match="unknown depthwise path"):
        set_path(model, "fft")
    assert set(CHOICES["conv_path"]) == {"auto", *PATHS}


@pytest.mark.parametrize("k", [5, 8])
def test_a_convmixer_step_gives_the_same_gradients_on_every_path(k):
    cfg = RunConfig(h=8, d=2, p=2, k=k)
    torch.manual_seed(0)
    model = build_model(cfg)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    grads = {}
    for path in PATHS:
        set_path(model, path)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads[path] = [p.grad.clone() for p in model.parameters()]
    for path in PATHS:
        for ours, stock in zip(grads[path], grads["stock"]):
            torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-5)

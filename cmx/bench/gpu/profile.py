"""Where a training step's time goes, by kind of kernel, from one torch.profiler trace.

Kinds: depthwise conv forward / backward, pointwise (1×1) conv, patch-embedding conv, normalisation and
activations, optimizer (AdamW and gradient clipping), augmentation, other (loss, pooling, residual adds,
copies), and on a GPU the idle gaps (wall time of the steps minus the time some kernel ran).

Why by the operator rather than the kernel name: cuDNN names its kernels after algorithms (implicit GEMM,
FFT, ...), and the same algorithm can serve a depthwise and a pointwise convolution. Every kernel is
launched by an aten operator, and the dispatcher-level `aten::convolution` / `aten::convolution_backward`
record their weight's shape: (h, 1, k, k) is depthwise, (h, h, 1, 1) pointwise. Each operator's *self*
time (its own kernels, on the GPU; its own CPU time on a CPU trace) is given to the kind of the nearest
ancestor that names one, so nothing is counted twice. Ranges labelled "cmx::augment" and "cmx::clip" (set
around the augmentation and the gradient clipping) and PyTorch's own "Optimizer.step" mark the rest.

Kernel time only: the profiler also reports each labelled range ("cmx::augment", "Optimizer.step", ...) as a
device event spanning its kernels and the gaps between them (a "user annotation", PyTorch issue 130730), and
attaches it to the range's CPU event as if it were a kernel. Counted, it would fill the idle gaps and
double the labelled kinds; `is_kernel` and `kernel_us` leave such events out.

The large-kernel depthwise convolution is a known weak spot of cuDNN (PyTorch issue 74363), so its share
and achieved memory bandwidth are reported: traffic is counted as each activation tensor read or written
once (forward: read x, write y; backward: read dy and x, write dx), a lower bound on what moves.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch.autograd import DeviceType

DEPTHWISE_FWD, DEPTHWISE_BWD = "depthwise conv fwd", "depthwise conv bwd"
POINTWISE, PATCH = "pointwise conv", "patch-embedding conv"
NORM_ACT, OPTIMIZER, AUGMENT, OTHER = "norm + activation", "optimizer (AdamW + clip)", "augmentation", "other"
KINDS = (DEPTHWISE_FWD, DEPTHWISE_BWD, POINTWISE, PATCH, NORM_ACT, OPTIMIZER, AUGMENT, OTHER)
AUG_RANGE, CLIP_RANGE = "cmx::augment", "cmx::clip"
_NORM_ACT_OPS = ("batch_norm", "layer_norm", "gelu", "relu", "threshold_backward")


def conv_kind(name: str, shapes: list) -> str | None:
    """The kind of an `aten::convolution` (weight = input 1) or `aten::convolution_backward` (weight =
    input 2) from its weight's shape (out, in/groups, kh, kw); None for any other operator."""
    if name == "aten::convolution":
        weight, backward = shapes[1] if len(shapes) > 1 else [], False
    elif name == "aten::convolution_backward":
        weight, backward = shapes[2] if len(shapes) > 2 else [], True
    else:
        return None
    if len(weight) != 4:
        return OTHER
    if weight[1] == 1 and weight[2] * weight[3] > 1:
        return DEPTHWISE_BWD if backward else DEPTHWISE_FWD
    if weight[2] == weight[3] == 1:
        return POINTWISE
    return PATCH


def kind_of(chain: list[tuple[str, list]]) -> str:
    """The kind of an operator from its chain of (name, input shapes), itself first, then its ancestors."""
    for name, shapes in chain:
        if name == AUG_RANGE:
            return AUGMENT
        if name == CLIP_RANGE or name.startswith("Optimizer.step") or "adam" in name.lower():
            return OPTIMIZER
        kind = conv_kind(name, shapes)
        if kind is not None:
            return kind
        if name.startswith("aten::") and any(op in name for op in _NORM_ACT_OPS):
            return NORM_ACT
    return OTHER


def annotation_names(events: Iterable) -> set[str]:
    """Names of the user annotations' device events (labelled ranges, not kernels)."""
    return {e.name for e in events if getattr(e, "device_type", DeviceType.CPU) != DeviceType.CPU
            and (getattr(e, "is_user_annotation", False) or e.name.startswith("cmx::"))}


def is_kernel(event, annotations: set[str]) -> bool:
    """A device event that is real kernel (or memcpy/memset) work: not a CPU event, not a user annotation."""
    return (getattr(event, "device_type", DeviceType.CPU) != DeviceType.CPU
            and not getattr(event, "is_user_annotation", False) and event.name not in annotations)


def kernel_us(events: list) -> float:
    """The device's busy time: every kernel's duration, user annotations left out."""
    annotations = annotation_names(events)
    return float(sum(e.time_range.elapsed_us() for e in events if is_kernel(e, annotations)))


def _self_time_us(event, device: bool, annotations: set[str]) -> float:
    """An operator's own time: its own kernels' durations on a device trace (annotation spans attached to a
    labelled range's event left out), its own CPU time on a CPU trace."""
    if not device:
        return float(event.self_cpu_time_total)
    return float(sum(k.duration for k in getattr(event, "kernels", ()) if k.name not in annotations))


def breakdown(events: Iterable, device: bool) -> dict[str, float]:
    """Self time (µs) per kind over a profiler's FunctionEvents (`prof.events()`): kernel time when
    `device`, else CPU time."""
    events = list(events)
    annotations = annotation_names(events)
    totals = dict.fromkeys(KINDS, 0.0)
    for event in events:
        if getattr(event, "device_type", DeviceType.CPU) != DeviceType.CPU:
            continue  # a kernel's own event: its time is counted in the operator that launched it
        spent = _self_time_us(event, device, annotations)
        if spent <= 0:
            continue
        chain, node = [], event
        while node is not None:
            chain.append((node.name, node.input_shapes or []))
            node = node.cpu_parent
        totals[kind_of(chain)] += spent
    return totals


@contextlib.contextmanager
def labelled_clipping():
    """Label `torch.nn.utils.clip_grad_norm_` (called by cmx.run.engine.optimisation_step) as CLIP_RANGE."""
    real = torch.nn.utils.clip_grad_norm_

    def clip(*args, **kw):
        with torch.profiler.record_function(CLIP_RANGE):
            return real(*args, **kw)

    torch.nn.utils.clip_grad_norm_ = clip
    try:
        yield
    finally:
        torch.nn.utils.clip_grad_norm_ = real


def profile_loop(loop: Callable[[], None], device: torch.device) -> dict[str, float]:
    """Run `loop` once under torch.profiler (with shapes) and return µs per kind (`breakdown`), plus
    "busy" (the sum: kernel time on a GPU, operator CPU time on a CPU)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with labelled_clipping(), torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        loop()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.events()
    totals = breakdown(events, device.type == "cuda")
    totals["busy"] = sum(totals[k] for k in KINDS)
    if device.type == "cuda":  # every kernel's own duration, attributed or not: the GPU's busy time
        totals["kernels"] = kernel_us(list(events))
    return totals


def depthwise_bytes(batch: int, h: int, d: int, p: int, bytes_per_value: int, size: int = 32) -> dict[str, int]:
    """Lower-bound activation traffic of the d depthwise convolutions in one step: forward reads x and
    writes y, backward reads dy and x and writes dx (weights are negligible: h·k² values)."""
    activation = batch * h * (size // p) ** 2 * bytes_per_value
    return {"fwd": 2 * d * activation, "bwd": 3 * d * activation}

"""Mixed-precision graphs: fp16 everywhere except LayerNorm and softmax, which stay fp32.

fp16 LayerNorm overflows in SAM's image encoder, so the norms (``nn.LayerNorm`` and SAM's ``LayerNorm2d``) run in
fp32 and every softmax casts its input to fp32. The graph's inputs and outputs stay fp32, so the engines feed fp16
and fp32 graphs identically. The types are explicit in the ONNX file, which is what TensorRT 11's strongly typed
networks (and TensorRT 10's STRONGLY_TYPED flag) build from.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn


class FP32Norm(nn.Module):
    """Runs a normalisation layer in fp32 inside an fp16 graph."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float()).to(x.dtype)


class HalfIO(nn.Module):
    """fp32 in, fp16 inside, fp32 out."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, *inputs: torch.Tensor):
        outs = self.graph(*[x.half() if x.is_floating_point() else x for x in inputs])
        return tuple(o.float() for o in outs) if isinstance(outs, tuple) else outs.float()


def half_model(model: nn.Module) -> nn.Module:
    """A copy in fp16 with every LayerNorm / LayerNorm2d wrapped to compute in fp32."""
    from segment_anything.modeling.common import LayerNorm2d

    from ..model.textsam import to_dtype

    m = to_dtype(copy.deepcopy(model), torch.float16)
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.LayerNorm, LayerNorm2d)):
                setattr(parent, name, FP32Norm(child))
    return m


@contextlib.contextmanager
def fp32_softmax():
    """While tracing, every softmax (method, ``torch.softmax``, ``F.softmax``) computes in fp32."""
    orig_method, orig_torch, orig_f = torch.Tensor.softmax, torch.softmax, F.softmax

    def method(self, dim=-1, *args, **kwargs):
        return orig_method(self.float(), dim).to(self.dtype)

    def function(x, dim=-1, *args, **kwargs):
        return orig_torch(x.float(), dim).to(x.dtype)

    torch.Tensor.softmax, torch.softmax, F.softmax = method, function, function
    try:
        yield
    finally:
        torch.Tensor.softmax, torch.softmax, F.softmax = orig_method, orig_torch, orig_f

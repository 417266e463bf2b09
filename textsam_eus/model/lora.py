"""LoRA as wrappers over a base ``nn.Linear`` with ``merge()`` (in the manner of PEFT's ``lora/layer.py``).

Two wrappers:

* :class:`LoRALinear` adapts a whole projection (the decoder's ``q_proj`` / ``v_proj``):
  ``y = base(x) + scaling * B(A(x))`` with ``A: in -> r`` and ``B: r -> out``.
* :class:`LoRAQKV` adapts the q and v thirds of a fused ``qkv`` projection (SAM's image-encoder blocks), k untouched:
  ``y[..., :d] += scaling * B_q(A_q(x))`` and ``y[..., 2d:] += scaling * B_v(A_v(x))``.

``B`` is zero-initialised, so an untrained adapter is exactly the identity. ``merge()`` returns a plain
``nn.Linear`` with the low-rank update folded into its weight, which is what export sees.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _new_pair(in_features: int, out_features: int, rank: int) -> tuple[nn.Linear, nn.Linear]:
    a = nn.Linear(in_features, rank, bias=False)
    b = nn.Linear(rank, out_features, bias=False)
    nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
    nn.init.zeros_(b.weight)
    return a, b


def _plain_copy(base: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                       device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        merged.weight.copy_(weight)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    merged.weight.requires_grad_(base.weight.requires_grad)
    if merged.bias is not None:
        merged.bias.requires_grad_(base.bias.requires_grad)
    return merged


class _LoRABase(nn.Module):
    """Shared by the wrappers: the base layer's attributes and ``merge()``."""

    base: nn.Linear

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # callers that read .weight (dtype/device) get the base weight
        return self.base.weight

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def merge(self) -> nn.Linear:
        """A plain Linear with the low-rank update folded into its weight."""
        with torch.no_grad():
            w = self.base.weight + self.delta_weight().to(self.base.weight.dtype)
        return _plain_copy(self.base, w)


class LoRALinear(_LoRABase):
    """``base(x) + scaling * lora_B(lora_A(x))``; x: (..., in) -> (..., out)."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float = 1.0) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.scaling = scaling
        self.lora_A, self.lora_B = _new_pair(base.in_features, base.out_features, rank)
        self.lora_A.to(base.weight.device)
        self.lora_B.to(base.weight.device)

    def delta_weight(self) -> torch.Tensor:
        """The low-rank update, shape (out, in)."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


class LoRAQKV(_LoRABase):
    """LoRA on the q and v slices of a fused qkv Linear(d, 3d); x: (..., d) -> (..., 3d)."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float = 1.0) -> None:
        super().__init__()
        if base.out_features != 3 * base.in_features:
            raise ValueError(f"LoRAQKV needs a fused qkv Linear(d, 3d), got Linear({base.in_features}, "
                             f"{base.out_features})")
        self.base = base
        self.rank = rank
        self.scaling = scaling
        d = base.in_features
        self.dim = d
        self.lora_A_q, self.lora_B_q = _new_pair(d, d, rank)
        self.lora_A_v, self.lora_B_v = _new_pair(d, d, rank)
        self.to(base.weight.device)

    def delta_weight(self) -> torch.Tensor:
        """The update of the fused weight, shape (3d, d), zero in the k rows."""
        d = self.dim
        dq = self.lora_B_q.weight @ self.lora_A_q.weight
        dv = self.lora_B_v.weight @ self.lora_A_v.weight
        zeros = torch.zeros(d, d, device=dq.device, dtype=dq.dtype)
        return torch.cat([dq, zeros, dv], dim=0) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.base(x)
        dq = self.lora_B_q(self.lora_A_q(x)) * self.scaling
        dv = self.lora_B_v(self.lora_A_v(x)) * self.scaling
        d = self.dim
        return torch.cat([qkv[..., :d] + dq, qkv[..., d:2 * d], qkv[..., 2 * d:] + dv], dim=-1)


LORA_TYPES = (LoRALinear, LoRAQKV)


def apply_lora(sam: nn.Module, rank: int, scaling: float = 1.0) -> list[str]:
    """Wrap the paper's targets in place; returns the wrapped module names.

    Targets: ``image_encoder.blocks[i].attn.qkv`` (q and v slices) of every encoder block and ``q_proj`` /
    ``v_proj`` of every attention module of ``mask_decoder.transformer`` (7 for SAM's depth-2 decoder).
    """
    wrapped: list[str] = []
    for i, block in enumerate(sam.image_encoder.blocks):
        if not isinstance(block.attn.qkv, LORA_TYPES):
            block.attn.qkv = LoRAQKV(block.attn.qkv, rank, scaling)
            wrapped.append(f"image_encoder.blocks.{i}.attn.qkv")
    for name, module in list(sam.mask_decoder.transformer.named_modules()):
        if hasattr(module, "q_proj") and hasattr(module, "v_proj"):
            for proj in ("q_proj", "v_proj"):
                lin = getattr(module, proj)
                if isinstance(lin, nn.Linear):
                    setattr(module, proj, LoRALinear(lin, rank, scaling))
                    wrapped.append(f"mask_decoder.transformer.{name}.{proj}".replace("..", "."))
    return wrapped


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRA wrapper inside ``model`` by its merged plain ``nn.Linear``; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LORA_TYPES):
                setattr(parent, child_name, child.merge())
                count += 1
    return count


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LORA_TYPES) for m in model.modules())

"""Fast attention for SAM's image encoder: the same block, computed with ``scaled_dot_product_attention``.

segment-anything's ``Attention`` writes ``softmax(q k^T * scale + rel_pos) v`` with plain matmuls, so neither a CPU
nor a GPU runs its fused attention kernels. ``SdpaAttention`` is the same module (same parameters and
state-dict keys: official checkpoints load unchanged) whose forward passes the decomposed relative position bias
(MViTv2, computed from the unscaled queries exactly as ``add_decomposed_rel_pos`` does) as the additive
``attn_mask`` of :func:`torch.nn.functional.scaled_dot_product_attention`. Windowed and global blocks are the same
module with different token grids.

Shapes: x (B, H, W, dim) -> (B, H, W, dim); q, k, v (B * heads, H * W, head_dim); bias (B * heads, H*W, H*W).

``set_encoder_attention(encoder, "sdpa" | "reference")`` switches every block of an ``ImageEncoderViT`` in place
(the class of each block's ``attn`` is swapped; nothing is copied).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ATTENTION_IMPLS", "auto_attention", "set_encoder_attention", "encoder_attention"]

ATTENTION_IMPLS = ("sdpa", "reference")


def _reference_class() -> type:
    from segment_anything.modeling.image_encoder import Attention

    return Attention


def _rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: tuple[int, int]
                  ) -> torch.Tensor:
    """Decomposed relative position bias (B*heads, H*W, H*W) from unscaled queries q (B*heads, H*W, c)."""
    from segment_anything.modeling.image_encoder import get_rel_pos

    h, w = hw
    rh, rw = get_rel_pos(h, h, rel_pos_h), get_rel_pos(w, w, rel_pos_w)  # (h, h, c), (w, w, c)
    r_q = q.reshape(q.shape[0], h, w, q.shape[-1])
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)  # (B*heads, h, w, h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)  # (B*heads, h, w, w)
    return (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(q.shape[0], h * w, h * w)


@lru_cache(maxsize=None)
def _sdpa_class() -> type:
    """:class:`SdpaAttention`, built on first use (segment-anything is imported lazily)."""
    base = _reference_class()

    class SdpaAttention(base):  # type: ignore[misc, valid-type]
        """segment-anything's ``Attention`` with a fused attention kernel (see the module docstring)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, h, w, _ = x.shape
            heads = self.num_heads
            qkv = self.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # (B, heads, H*W, c)
            bias = None
            if self.use_rel_pos:
                flat = q.reshape(b * heads, h * w, -1)
                bias = _rel_pos_bias(flat, self.rel_pos_h, self.rel_pos_w, (h, w)).view(b, heads, h * w, h * w)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
            out = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
            return self.proj(out)

    SdpaAttention.__module__ = __name__
    SdpaAttention.__qualname__ = "SdpaAttention"
    return SdpaAttention


def auto_attention(device_type: str, image_size: int) -> str:
    """What ``attention="auto"`` runs: sdpa where it was measured faster (CUDA; the CPU at 1024 px, vit_b 1.38x),
    reference elsewhere (the CPU at smaller inputs, where both take the same time, so the bit-exact one)."""
    return "sdpa" if device_type == "cuda" or image_size >= 1024 else "reference"


def set_encoder_attention(encoder: nn.Module, impl: str) -> nn.Module:
    """Switch every attention block of a SAM ``ImageEncoderViT`` to ``impl`` ("sdpa" or "reference")."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention {impl!r} is invalid: choose one of {ATTENTION_IMPLS}")
    ref = _reference_class()
    cls = _sdpa_class() if impl == "sdpa" else ref
    for block in encoder.blocks:
        if isinstance(block.attn, ref):
            block.attn.__class__ = cls
    return encoder


def encoder_attention(encoder: nn.Module) -> str:
    """The implementation the encoder's blocks use now."""
    return "sdpa" if all(isinstance(b.attn, _sdpa_class()) for b in encoder.blocks) else "reference"

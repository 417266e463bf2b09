"""Dice + BCE on mask logits (the paper's loss).

Shapes: logits (B, 1, S, S), target (B, 1, S, S) in {0, 1}; returns a scalar. ``valid`` (B, 1, S, S) optionally
excludes the zero padding around the resized image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
              eps: float = 1.0, per_sample: bool = False) -> torch.Tensor:
    """1 - soft Dice, per sample then averaged (``per_sample``: the (B,) values); ``eps`` smooths empty masks
    (both empty -> loss 0)."""
    prob = torch.sigmoid(logits.float())
    target = target.float()
    if valid is not None:
        prob, target = prob * valid, target * valid
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    loss = 1 - (2 * inter + eps) / (denom + eps)
    return loss if per_sample else loss.mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    if valid is None:
        return loss.mean()
    return (loss * valid).sum() / valid.sum().clamp_min(1.0)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                  dice_weight: float = 1.0, bce_weight: float = 1.0) -> torch.Tensor:
    return dice_weight * dice_loss(logits, target, valid) + bce_weight * bce_loss(logits, target, valid)


def dice_bce_per_sample(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) Dice + BCE of each sample on its own (BCE averaged over that sample's valid pixels)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none") * valid
    dims = tuple(range(1, logits.ndim))
    return dice_loss(logits, target, valid, per_sample=True) + bce.sum(dims) / valid.sum(dims).clamp_min(1.0)

"""Overlap of two binary masks: the one home of mask IoU and Dice.

Used by export (ONNX vs torch parity), the stream (mask stability between frames), the screen-layout tracker,
the demo (Dice against the phantom's exact masks) and evaluation (:func:`textsam_eus.train.metrics.dice`).
Any nonzero pixel is foreground. Both masks empty -> 1.0 (they agree that there is nothing); exactly one empty
-> 0.0. Needs only NumPy: ``stream`` and ``common``, which stay free of torch, import this module.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_iou", "mask_dice"]


def _counts(a, b) -> tuple[int, int, int]:
    """(|A ∩ B|, |A|, |B|) of two masks of one shape."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    return int(np.count_nonzero(np.logical_and(a, b))), int(np.count_nonzero(a)), int(np.count_nonzero(b))


def mask_iou(a, b) -> float:
    """|A ∩ B| / |A ∪ B|; 1.0 when both are empty."""
    inter, na, nb = _counts(a, b)
    union = na + nb - inter
    return 1.0 if union == 0 else inter / union


def mask_dice(a, b) -> float:
    """2 |A ∩ B| / (|A| + |B|); 1.0 when both are empty."""
    inter, na, nb = _counts(a, b)
    return 1.0 if na + nb == 0 else 2.0 * inter / (na + nb)

"""Presence over time: whether a frame's outline is shown, and how (faded when unsure).

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...common.presence import PresenceGate
from ..record import FrameRecord, NoSegmentation

__all__ = ["PresencePolicy"]


class PresencePolicy:
    """The engine's calibrated presence threshold (or ``threshold``; none when ``enabled`` is False) through the
    hysteresis of :class:`~textsam_eus.common.presence.PresenceGate` (``show_frames`` at or above it before the
    outline shows, ``hide_frames`` below before it hides; stills are decided one by one). A shown outline whose
    predicted IoU is below ``confident_iou`` is drawn faded.

    State: the gate (its counts and state go to ``summary.json``)."""

    def __init__(self, engine, source, *, enabled: bool = True, threshold: float | None = None,
                 show_frames: int | None = None, hide_frames: int | None = None, confident_iou: float = 0.7) -> None:
        p = dict(getattr(engine, "presence", None) or {})
        threshold = threshold if threshold is not None else p.get("threshold")
        if not enabled:
            threshold = None
        if getattr(source, "per_file_outputs", False):  # stills are unrelated: decide each one on its own
            p["show_frames"] = p["hide_frames"] = 1
        self.gate = PresenceGate(threshold, show_frames or p.get("show_frames", 3),
                                 hide_frames or p.get("hide_frames", 5))
        self.confident_iou = confident_iou

    def decide(self, rec: FrameRecord) -> tuple[bool, list[str]]:
        """Clears the mask of a frame shown as tumour-free; (faded, the HUD's status line). Sets
        ``rec.info["presence"]`` and ``rec.info["decision"]``."""
        result = rec.result
        score = getattr(result, "presence", None)
        decision = self.gate.update(score)
        rec.info["presence"] = round(float(score), 4) if score is not None and np.isfinite(score) else None
        rec.info["decision"] = decision.state
        if isinstance(result, NoSegmentation):
            rec.mask[:] = 0
            return False, [result.reason]
        if not decision.shown or not rec.mask.any():
            rec.mask[:] = 0
            return False, ["no tumour detected"]
        iou = float(result.iou)
        faded = decision.state == "holding" or not (np.isfinite(iou) and iou >= self.confident_iou)
        label = ("tumour?" if faded else "tumour") + (f" (presence {score:.2f})" if self.gate.enabled else "")
        return faded, [label]

    def describe(self) -> dict[str, Any]:
        return self.gate.describe()

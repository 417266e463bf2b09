"""Deciding over time whether a tumour is shown: hysteresis on the per-frame presence score.

The engine gives every frame a presence score (the IoU head's prediction on the text-only pass, trained to 0 on
lesion-free images) and the checkpoint a calibrated threshold. :class:`PresenceGate` shows the outline only after
``show_frames`` frames in a row at or above the threshold and hides it only after ``hide_frames`` frames in a row
below, so the outline neither flickers nor appears for a single frame. With no threshold (presence off: a
checkpoint trained without negatives) every outline is shown, as before.

This module must stay free of torch and of the model / engine packages (of ours it imports only ``core``); the
stream gates frames with it, training calibrates its frame counts on validation recordings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.errors import OptionError

__all__ = ["PresenceGate", "PresenceDecision"]


@dataclass
class PresenceDecision:
    """One frame's decision: ``shown`` (draw and write the mask), ``score``, and ``state`` for the report."""

    shown: bool
    score: float | None
    state: str  # "shown", "hidden", "showing" (above, not yet k frames), "holding" (below, not yet m), "off"


def _finite_number(value) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class PresenceGate:
    """Hysteresis: show after ``show_frames`` scores >= ``threshold`` in a row, hide after ``hide_frames`` below.

    ``threshold=None`` turns presence off: every frame is shown. A missing score (NaN, no imaging sector) counts
    as below the threshold.
    """

    def __init__(self, threshold: float | None, show_frames: int = 3, hide_frames: int = 5) -> None:
        if threshold is not None and not _finite_number(threshold):
            # the score's own scale: the IoU head's raw output, not confined to [0, 1]
            raise OptionError(f"presence threshold {threshold!r} is invalid: use a finite number on the presence "
                              "score's scale (the calibrated one is in the checkpoint) or None (off)")
        if int(show_frames) < 1 or int(hide_frames) < 1:
            raise OptionError(f"show_frames={show_frames}, hide_frames={hide_frames} are invalid: both must be >= 1")
        self.threshold = None if threshold is None else float(threshold)
        self.show_frames, self.hide_frames = int(show_frames), int(hide_frames)
        self.shown = False
        self._run = 0  # frames in a row on the other side of the threshold
        self.frames_shown = 0
        self.frames = 0

    @property
    def enabled(self) -> bool:
        return self.threshold is not None

    def update(self, score: float | None) -> PresenceDecision:
        self.frames += 1
        if self.threshold is None:
            self.frames_shown += 1
            return PresenceDecision(True, score, "off")
        above = score is not None and math.isfinite(score) and score >= self.threshold
        if above != self.shown:
            self._run += 1
            if self._run >= (self.show_frames if above else self.hide_frames):
                self.shown, self._run = above, 0
        else:
            self._run = 0
        state = "shown" if self.shown else "hidden"
        if self._run:
            state = "holding" if self.shown else "showing"
        self.frames_shown += self.shown
        return PresenceDecision(self.shown, score, state)

    def describe(self) -> dict:
        return {"threshold": self.threshold, "show_frames": self.show_frames, "hide_frames": self.hide_frames,
                "frames": self.frames, "frames_shown": self.frames_shown,
                "shown_fraction": self.frames_shown / self.frames if self.frames else None}

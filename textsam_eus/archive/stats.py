"""One examination summed up for the archive table, while it is annotated: a sink that writes no file.

It reads what the pipeline already decided for each frame (``record.info``: the presence score, whether the
outline was shown, the written mask's area) and keeps a few running numbers, so its memory does not grow with the
recording. Its :meth:`~ExamStatsSink.describe` is empty: the examination's folder holds exactly what ``stream``
writes.
"""

from __future__ import annotations

import math
from typing import Any

from ..stream.record import FrameRecord
from ..stream.sinks import Sink

__all__ = ["ExamStatsSink"]


class ExamStatsSink(Sink):
    """Presence (the fraction of frames with an outline shown, i.e. a non-empty written mask; the maximum score)
    and mask areas (pixels, over the frames with a mask) of one run."""

    def __init__(self) -> None:
        self.frames = 0
        self.presence_max: float | None = None
        self.mask_frames = 0
        self.area_sum = 0
        self.area_max = 0
        self.area_min: int | None = None

    def write(self, record: FrameRecord) -> None:
        info = record.info
        self.frames += 1
        score = info.get("presence")
        if score is not None and math.isfinite(score):
            self.presence_max = score if self.presence_max is None else max(self.presence_max, score)
        area = int(info.get("mask_area") or 0)
        if area > 0:  # a written mask is empty when no outline is shown
            self.mask_frames += 1
            self.area_sum += area
            self.area_max = max(self.area_max, area)
            self.area_min = area if self.area_min is None else min(self.area_min, area)

    def result(self) -> dict[str, Any]:
        """The table's columns for this examination (None where nothing was measured)."""
        n = self.frames
        return {"presence_shown": round(self.mask_frames / n, 4) if n else None,
                "presence_max": round(self.presence_max, 4) if self.presence_max is not None else None,
                "mask_frames": self.mask_frames,
                "mask_area_mean": round(self.area_sum / self.mask_frames, 1) if self.mask_frames else None,
                "mask_area_min": self.area_min,
                "mask_area_max": self.area_max if self.mask_frames else None}

"""The segment stage: the engine on each frame's ROI or imaging sector, seeded by the previous frame (``temporal``).

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..control import RunControl
from ..record import FrameRecord, NoSegmentation
from ..roi import ROI

__all__ = ["SegmentStage", "drop_specks"]


def drop_specks(mask: np.ndarray, keep: float = 0.2) -> np.ndarray:
    """``mask`` (H x W uint8) without the bits smaller than ``keep`` of its largest part (fragments at the sector's
    edge that clipping leaves behind)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    small = np.nonzero(areas < keep * areas.max())[0] + 1
    if small.size:
        mask = mask.copy()
        mask[np.isin(labels, small)] = 0
    return mask


class SegmentStage:
    """``engine.segment`` on each record: the whole frame, a fixed ROI (frames it does not fit are segmented whole,
    with a warning) or the imaging sector the capture stage found (``auto_layout``; a frame without one gets an
    empty mask). Sets ``rec.result`` and ``rec.mask`` (H x W uint8, the full frame's size) and the engine's timings.

    State: the temporal seed (the previous confident frame's box and centroid; reset at a size or layout change)
    and ``seeded`` (frames segmented from a seed). Parallel workers share one instance (never with ``temporal``).
    """

    def __init__(self, engine, control: RunControl, *, roi: ROI | str | None = None, auto_layout: bool = False,
                 iterations: int | None = None, temporal: bool = False, temporal_min_iou: float = 0.7,
                 temporal_iterations: int = 1) -> None:
        self.engine = engine
        self.control = control
        self.roi = roi
        self.auto_layout = auto_layout
        self.iterations = iterations
        self.temporal = temporal
        self.temporal_min_iou = temporal_min_iou
        self.temporal_iterations = temporal_iterations
        self.seeded = 0
        self._prev: Any = None
        self._seed_key: tuple | None = None  # (frame size, layout id) the temporal seed belongs to

    def _roi_for(self, rec: FrameRecord) -> ROI | None:
        roi = self.roi
        if not isinstance(roi, ROI) or roi.fits(rec.width, rec.height):
            return roi
        self.control.warn(f"ROI {roi} does not fit {rec.width}x{rec.height} frames: those frames are segmented whole")
        rec.info["roi"] = "full frame"
        return None

    def __call__(self, rec: FrameRecord) -> FrameRecord | None:
        if self.control.stopping:
            return None
        layout = rec.layout
        key = (rec.size, layout.id if layout is not None else None)
        if self.temporal and key != self._seed_key:  # no seeding across a size or layout change
            self._seed_key, self._prev = key, None
        if self.auto_layout:
            if layout is None:  # no imaging sector on the screen (black, frozen blank): nothing to segment
                rec.result, rec.mask = NoSegmentation("no imaging sector"), np.zeros(rec.image.shape[:2], np.uint8)
                return rec
            roi, view = None, layout.crop(rec.image)
        else:
            roi = self._roi_for(rec)
            view = roi.crop(rec.image) if roi is not None else rec.image
        kwargs: dict[str, Any] = {}
        if self.iterations is not None:
            kwargs["iterations"] = self.iterations
        if self.temporal and self._prev is not None:
            kwargs.update(seed_prompt=self._prev, iterations=self.temporal_iterations)
            self.seeded += 1
        result = self.engine.segment(view, **kwargs)
        confident = result.box is not None and bool(np.isfinite(result.iou)) and result.iou >= self.temporal_min_iou
        self._prev = (result.box, result.centroid) if confident else None
        mask = np.asarray(result.mask).astype(np.uint8, copy=False)
        if layout is not None:
            mask = drop_specks(layout.paste(mask))  # back in the full screen; nothing outside the imaging sector
        elif roi is not None:
            mask = roi.paste(rec.image.shape, mask)
        rec.result, rec.mask = result, mask
        rec.timings.update({k: v for k, v in result.timings.items() if k != "total"})
        rec.timings["engine_total"] = result.timings.get("total", 0.0)
        return rec

    def describe(self) -> dict[str, Any]:
        return {"seeded_frames": self.seeded}

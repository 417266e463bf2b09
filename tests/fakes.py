"""Stand-ins shared by the streaming tests (importable from child processes too)."""

from __future__ import annotations

import time

import numpy as np

from textsam_eus.model.refine import SegmentResult


class FakeEngine:
    """Stands in for a model where the pipeline, not the model, is under test: a disc at the frame centre."""

    name = "fake"

    def __init__(self, delay_s: float = 0.0, iou: float = 0.9) -> None:
        self.delay_s = delay_s
        self.iou = iou
        self.calls = []

    def segment(self, frame, **kwargs):
        self.calls.append(kwargs)
        if self.delay_s:
            time.sleep(self.delay_s)
        h, w = frame.shape[:2]
        yy, xx = np.ogrid[:h, :w]
        mask = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2
        return SegmentResult(mask=mask, iou=self.iou, box=np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4]),
                             centroid=np.array([w / 2, h / 2]), passes=1, timings={"encode": 1.0, "total": 1.0})

    def info(self):
        return {"engine": "fake", "device": "cpu"}

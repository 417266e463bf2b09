"""Stand-ins shared by the streaming tests (importable from child processes too)."""

from __future__ import annotations

import time

import numpy as np

from textsam_eus.model.refine import SegmentResult
from textsam_eus.stream.base import FrameSource
from textsam_eus.stream.record import FrameRecord


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


class SyntheticSource(FrameSource):
    """``n`` frames made by ``image(i)`` (H x W x 3 uint8), optionally live and paced every ``interval`` s."""

    def __init__(self, n, image, *, fps=30.0, live=False, interval=0.0, name="synthetic"):
        super().__init__()
        self.n, self.image, self.interval = n, image, interval
        self.fps, self.is_live, self.name = fps, live, name
        first = image(0)
        self.size = (first.shape[1], first.shape[0])
        self.n_frames = None if live else n

    def _frames(self):
        for i in range(self.n):
            if self.interval:
                time.sleep(self.interval)
            self.stats["decoded"] += 1
            yield FrameRecord(i, self.image(i), time.monotonic(), None if self.is_live else i / self.fps, self.name)


class DyingCapture:
    """A cv2.VideoCapture stand-in that delivers ``n`` frames, then fails forever."""

    def __init__(self, n):
        self.n, self.i = n, 0

    def isOpened(self):
        return True

    def read(self):
        self.i += 1
        if self.i > self.n:
            return False, None
        return True, np.full((48, 64, 3), 100, np.uint8)

    def set(self, *a):
        return True

    def get(self, prop):
        return {3: 64.0, 4: 48.0, 5: 30.0}.get(prop, 0.0)

    def release(self):
        pass


def rss_mb() -> float:
    """This process's resident memory (Linux); the calling test is skipped elsewhere."""
    import pytest

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    pytest.skip("no /proc/self/status")

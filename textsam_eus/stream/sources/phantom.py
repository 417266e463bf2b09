"""The synthetic EUS phantom as a frame source (``--source phantom`` / ``phantom:N``): ground truth in ``last_mask``.

This module must stay free of torch and of the engine packages.
"""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from ..base import FrameSource, SourceError, _to_rgb_u8
from ..record import FrameRecord

__all__ = ["PhantomSource"]


class PhantomSource(FrameSource):
    """Synthetic EUS phantom frames (``textsam_eus.common.phantom.PhantomClip``).

    ``last_mask`` holds the ground-truth mask (uint8 HxW, 0/1) of the most recent frame.
    With ``realtime=True`` frames are paced at ``fps`` and the source behaves as live.
    """

    def __init__(self, n_frames: int = 150, seed: int = 0, width: int = 640, height: int = 480,
                 fps: float = 15.0, realtime: bool = False) -> None:
        super().__init__()
        if int(n_frames) <= 0:
            raise SourceError(f"phantom n_frames must be > 0, got {n_frames}")
        if int(width) <= 0 or int(height) <= 0:
            raise SourceError(f"phantom size must be positive, got {width}x{height}")
        if not (fps and fps > 0):
            raise SourceError(f"fps must be > 0, got {fps}")
        from textsam_eus.common.phantom import PhantomClip, PhantomConfig  # lazy by design

        self.n_frames = int(n_frames)
        self.seed = int(seed)
        self.fps = float(fps)
        self.size = (int(width), int(height))
        self.realtime = bool(realtime)
        self.is_live = self.realtime
        self.name = f"phantom:{self.n_frames}:seed{self.seed}"
        self._clip = PhantomClip(self.n_frames, self.seed,
                                 config=PhantomConfig(height=int(height), width=int(width)),
                                 fps=self.fps)
        self.last_mask: np.ndarray | None = None

    def _frames(self) -> Iterator[FrameRecord]:
        t0 = time.monotonic()
        for index, item in enumerate(self._clip):
            if index >= self.n_frames:
                break
            image, mask = item[0], item[1]
            if self.realtime:
                delay = t0 + index / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            img = np.asarray(image)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                img = _to_rgb_u8(img, bgr=False)
            img = np.ascontiguousarray(img)
            self.last_mask = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
            frame = FrameRecord(index=index, image=img, timestamp=time.monotonic(),
                          pts=index / self.fps, source=self.name)
            self.stats["decoded"] = index + 1
            yield frame

    def _release(self) -> None:
        self._clip = None

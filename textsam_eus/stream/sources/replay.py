"""Replay a recording as if it came from a capture card (``--realtime [--speed X]``).

Frames are released at the source's own timestamps divided by ``speed``, and the replay is a *live* source: the
pipeline keeps only the newest frame when inference falls behind and counts the drops, exactly as with a capture
card, so latency under overload is measurable from a file and every figure can be reproduced (Holoscan's
replayer with ``realtime: true`` does the same).

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterator

from ..base import FrameSource, SourceError
from ..record import FrameRecord

__all__ = ["RealtimeReplay"]


class RealtimeReplay(FrameSource):
    """Wrap a file or folder source and pace it in real time (times ``speed``); ``is_live`` is True.

    Each frame's ``timestamp`` is the moment it is released (when a capture card would deliver it). A frame that
    decodes later than its due time is released at once and counted in ``stats['late_frames']``.
    """

    def __init__(self, inner: FrameSource, speed: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not (speed > 0 and math.isfinite(speed)):
            raise SourceError(f"--speed {speed!r} is invalid: use a number > 0 (1 = the recording's own pace, "
                              "2 = twice as fast)")
        if inner.is_live:
            raise SourceError(f"{inner.name} is already live; --realtime replays files and folders")
        self.inner = inner
        self.speed = float(speed)
        self.fps = (inner.fps or 15.0) * self.speed
        self.size = inner.size
        self.is_live = True
        self.n_frames = inner.n_frames
        self.name = inner.name
        self.per_file_outputs = getattr(inner, "per_file_outputs", False)
        self.warnings = inner.warnings
        self.stats = inner.stats  # one set of counters: the inner source's, plus late_frames
        self.stats.setdefault("late_frames", 0)
        self._clock, self._sleep = clock, sleep

    @property
    def unreadable(self):
        return getattr(self.inner, "unreadable", [])

    def _frames(self) -> Iterator[FrameRecord]:
        t0 = pts0 = None
        period = 1.0 / (self.inner.fps or 15.0)
        for i, rec in enumerate(self.inner):
            pts = rec.pts if rec.pts is not None else i * period
            if t0 is None:
                t0, pts0 = self._clock(), pts
            due = t0 + (pts - pts0) / self.speed
            delay = due - self._clock()
            if delay > 0:
                self._sleep(delay)
            elif delay < -0.5 * period / self.speed:
                self.stats["late_frames"] += 1
            if self._closed:
                return
            rec.timestamp = self._clock()
            yield rec

    def _release(self) -> None:
        self.inner.close()

"""The first stage: the source's frames, timed and numbered, with the imaging sector found (``roi="auto"``).

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from ...common.screen import LayoutTracker
from ..base import FrameSource, through
from ..control import RunControl
from ..record import FrameRecord
from .base import LatestQueue

__all__ = ["CaptureStage"]


class CaptureStage:
    """Reads ``source`` (:meth:`frames`: each record with its decode/grab time in ``timings["video_decode"]``;
    stops at ``max_frames``) and admits each frame in order (:meth:`admit`: ``seq``, and ``layout`` when
    ``auto_layout``, before any parallel worker sees it).

    State: ``frames_in`` (frames admitted), ``input_done`` (the input ended by itself or at ``max_frames``, not by
    a stop request), the layout tracker, and ``outbox``: the frames queue, whose drops a live source counts."""

    name = "capture"

    def __init__(self, source: FrameSource, control: RunControl, *, max_frames: int | None = None,
                 auto_layout: bool = False) -> None:
        self.source = source
        self.control = control
        self.max_frames = max_frames
        self.layouts = LayoutTracker() if auto_layout else None
        self.frames_in = 0
        self.input_done = False
        self.outbox: Any = None  # set by the pipeline's compose()

    @property
    def dropped(self) -> int:
        """Frames a live source's queue replaced before they were segmented."""
        return self.outbox.dropped if isinstance(self.outbox, LatestQueue) else 0

    def frames(self) -> Iterator[FrameRecord]:
        """The source's frames, each with its decode/grab time; stops at ``max_frames``."""
        it = iter(self.source)
        while True:
            t = time.perf_counter()
            try:
                record = next(it)
            except StopIteration:
                self.input_done = through(self.source, "exhausted", False)
                return
            record.timings["video_decode"] = (time.perf_counter() - t) * 1e3
            yield record
            if self.max_frames and self.frames_in >= self.max_frames:
                self.control.note_reason(f"max frames ({self.max_frames})")
                self.input_done = True
                return

    def admit(self, rec: FrameRecord) -> FrameRecord:
        rec.seq = self.frames_in
        self.frames_in += 1
        if self.layouts is not None:  # in frame order, before any parallel worker
            t = time.perf_counter()
            rec.layout = self.layouts.update(rec.image)
            rec.timings["layout_detect"] = (time.perf_counter() - t) * 1e3
            rec.info["layout"] = rec.layout.short() if rec.layout is not None else "none"
        return rec

    def describe(self) -> dict[str, Any]:
        return {"frames_in": self.frames_in, "frames_dropped": self.dropped,
                "layout": self.layouts.describe() if self.layouts is not None else None}

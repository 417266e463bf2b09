"""The one per-frame record that flows through every stage of the streaming pipeline.

A source creates it (index, image, timestamps); the segment stage adds ``result``/``mask``; the draw stage adds
``overlay``; the write stage hands it to every sink. A frame dropped by a live queue keeps only its index and
timestamps (:meth:`FrameRecord.as_dropped`), so a long live run never holds dropped images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FrameRecord", "NoSegmentation"]


@dataclass
class NoSegmentation:
    """Stands in for an engine result when a frame was not segmented (e.g. no imaging sector on the screen)."""

    reason: str
    mask: np.ndarray | None = None
    iou: float = float("nan")
    box: np.ndarray | None = None
    centroid: np.ndarray | None = None
    passes: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class FrameRecord:
    """One decoded / captured frame and everything computed for it.

    Attributes:
        index: 0-based position in the source (image folders: position in the sorted file list).
        image: ``H x W x 3`` uint8 RGB, C-contiguous (``None`` once dropped).
        timestamp: capture time, ``time.monotonic()`` seconds when the frame was grabbed (live; the kernel's
            timestamp where a V4L2 device gives one), released (``--realtime`` replay) or decoded (file).
        pts: presentation time in seconds from the container (``None`` for live sources without one).
        source: human-readable description of the source (path, device, ...).
        file: the source file of this frame (image folders), else ``None``.
        name: output stem for per-file outputs (image folders: the file's stem, made unique), else ``None``.
        layout: the screen's :class:`~textsam_eus.common.screen.ScreenLayout` (``--roi auto``), ``None`` if none.
        result: the engine's :class:`~textsam_eus.model.refine.SegmentResult` (segment stage).
        mask: ``H x W`` uint8 0/1 at the frame's own size (segment stage).
        overlay: ``H x W x 3`` uint8 RGB with the mask drawn (draw stage).
        timings: milliseconds per stage (video_decode, queue_wait, preprocess, encode, decode_k, ...).
        info: small per-frame facts for the report (roi used, size change, ...).
        dropped: True for a frame a live queue replaced before it was processed.
    """

    index: int
    image: np.ndarray | None
    timestamp: float
    pts: float | None
    source: str
    file: str | None = None
    name: str | None = None
    layout: Any = None
    result: Any = None
    mask: np.ndarray | None = None
    overlay: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    dropped: bool = False
    seq: int = -1  # admission order into the pipeline (set by the capture stage; orders parallel workers' output)
    t_queued: float | None = field(default=None, repr=False)  # perf_counter() when put into a stage's inbox

    @property
    def height(self) -> int:
        return int(self.image.shape[0]) if self.image is not None else 0

    @property
    def width(self) -> int:
        return int(self.image.shape[1]) if self.image is not None else 0

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return (self.width, self.height)

    def as_dropped(self) -> "FrameRecord":
        """The record of a frame a live queue dropped: index, timestamps and source only, no pixels."""
        return FrameRecord(index=self.index, image=None, timestamp=self.timestamp, pts=self.pts, source=self.source,
                           file=self.file, name=self.name, dropped=True)

    def __repr__(self) -> str:  # keep the pixel arrays out of logs
        pts = "None" if self.pts is None else f"{self.pts:.4f}"
        return (f"FrameRecord(index={self.index}, size={self.width}x{self.height}, timestamp={self.timestamp:.4f}, "
                f"pts={pts}, source={self.source!r}{', dropped' if self.dropped else ''})")

"""The video sinks: :class:`OverlayVideoSink` (``overlay.mp4``, fragmented H.264 with the source's timestamps; frames
of another size than the first are letterboxed into the first size, scaled to fit and centred on black) and
:class:`MaskVideoSink` (``masks.mkv``, lossless FFV1; a new segment file starts when the frame size changes, so
every mask keeps its own frame's size).

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..record import FrameRecord
from .base import Sink, note_output
from .encoders import MaskVideoEncoder, VideoEncoder

__all__ = ["OverlayVideoSink", "MaskVideoSink", "letterbox"]


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size`` (width, height), aspect kept, centred on black."""
    import cv2

    w, h = size
    ih, iw = image.shape[:2]
    scale = min(w / iw, h / ih)
    nw, nh = max(1, int(round(iw * scale))), max(1, int(round(ih * scale)))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((h, w) + image.shape[2:], dtype=image.dtype)
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out


class OverlayVideoSink(Sink):
    """``overlay.mp4``: fragmented H.264 (plays after SIGKILL up to the last second); letterboxes size changes."""

    def __init__(self, out: Path, fps: float, name: str = "overlay.mp4") -> None:
        self.out, self.rel = Path(out), name
        self.encoder = VideoEncoder(self.out / name, fps)
        self.size: tuple[int, int] | None = None
        self.letterboxed = 0
        self.records = 0

    def write(self, record: FrameRecord) -> None:
        image = record.overlay
        size = (image.shape[1], image.shape[0])
        if self.size is None:
            self.size = size
        elif size != self.size:
            image = letterbox(image, self.size)
            self.letterboxed += 1
        self.encoder.write(image, record.pts)
        self.records += 1
        note_output(record, "overlay", self.rel)

    def close(self) -> None:
        self.encoder.close()

    def lost_rows(self) -> tuple[str, int] | None:
        """("overlay", the first record not in the file) when the file lost frames (cut back on a full disk)."""
        kept = self.encoder.frames_written
        return ("overlay", kept) if kept < self.records else None

    def describe(self) -> dict[str, Any]:
        return {"video": self.rel, "video_frames": self.encoder.frames_written,
                "video_letterboxed_frames": self.letterboxed}


class MaskVideoSink(Sink):
    """``masks.mkv`` (FFV1, 0/255); a size change starts ``masks_seg001.mkv``, ``masks_seg002.mkv``, ..."""

    def __init__(self, out: Path, fps: float) -> None:
        self.out, self.fps = Path(out), fps
        self.files: list[str] = []
        self.encoder: MaskVideoEncoder | None = None
        self.size: tuple[int, int] | None = None
        self.records = 0
        self._segment_records = 0  # records given to the current segment

    def _start_segment(self) -> None:
        if self.encoder is not None:
            self.encoder.close()
        rel = "masks.mkv" if not self.files else f"masks_seg{len(self.files):03d}.mkv"
        self.encoder = MaskVideoEncoder(self.out / rel, self.fps)
        self.files.append(rel)
        self._segment_records = 0

    def write(self, record: FrameRecord) -> None:
        size = (record.mask.shape[1], record.mask.shape[0])
        if size != self.size:
            self._start_segment()
            self.size = size
        self.encoder.write(record.mask, record.pts)
        self.records += 1
        self._segment_records += 1
        note_output(record, "mask", f"{self.files[-1]}#{self.encoder.frames_written - 1}")

    def close(self) -> None:
        if self.encoder is not None:
            self.encoder.close()

    def lost_rows(self) -> tuple[str, int] | None:
        """("mask", the first record not in the last segment) when it lost frames (cut back on a full disk)."""
        if self.encoder is None or self.encoder.frames_written >= self._segment_records:
            return None
        return "mask", self.records - (self._segment_records - self.encoder.frames_written)

    def describe(self) -> dict[str, Any]:
        return {"masks": self.files}

"""The sinks of the streaming pipeline: each takes every processed :class:`FrameRecord` once, then is closed.

A new output is one class with ``write(record)`` and ``close()``. Sinks that write files note the path they wrote
in ``record.info["outputs"]`` (relative to the output folder), so :class:`OutputIndexSink`, listed after them,
maps every input frame to its outputs.

* :class:`OverlayVideoSink` - the overlay as fragmented H.264 MP4 with the source's timestamps; frames of another
  size than the first are letterboxed into the first size (scaled to fit, centred on black).
* :class:`MaskVideoSink`    - lossless FFV1 mask video; a new segment file starts when the frame size changes, so
  every mask keeps its own frame's size.
* :class:`MaskPngSink`      - one PNG per frame (0/255): ``<stem>.png`` for image folders, else
  ``mask_{index:06d}.png``; written to a temporary name and renamed, so no half-written PNG is ever left.
* :class:`OverlayPngSink`   - the overlay of each still as ``overlays/<stem>.png`` (image folders).
* :class:`OutputIndexSink`  - ``outputs.csv``: one row per frame, input file -> output files, written as it goes.
* :class:`ReportSink`       - per-frame timings into a :class:`~textsam_eus.stream.report.LatencyReport`.
* :class:`WindowSink`       - an on-screen window; closing it (or q / Esc) stops the run.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import csv
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import write_bytes_atomic
from .encoders import MaskVideoEncoder, SinkError, VideoEncoder
from .manifest import claim
from .record import FrameRecord
from .report import LatencyReport
from .window import Window

__all__ = ["Sink", "OverlayVideoSink", "MaskVideoSink", "MaskPngSink", "OverlayPngSink",
           "OutputIndexSink", "ReportSink", "WindowSink", "write_png"]


def write_png(path: Path, image: np.ndarray, compression: int = 1) -> None:
    """Encode ``image`` as PNG and put it at ``path`` atomically (temporary name, then rename)."""
    import cv2

    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise SinkError(f"PNG encoding failed for {path}")
    claim(path)  # listed as the run's own before it exists (with its .part)
    write_bytes_atomic(path, buf, sync=False)  # one of many per-frame files: renamed whole, not synced each


def _note(record: FrameRecord, key: str, rel: str) -> None:
    record.info.setdefault("outputs", {})[key] = rel


def _mask_u8(mask: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(mask) > 0, np.uint8(255), np.uint8(0))


class Sink:
    """One output of the pipeline. ``write`` gets every processed record in order; ``close`` finalises."""

    stop_requested = False  # a sink may ask the pipeline to stop (the window was closed)

    def write(self, record: FrameRecord) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        """What it wrote, for ``summary.json``."""
        return {}


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
        _note(record, "overlay", self.rel)

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
        _note(record, "mask", f"{self.files[-1]}#{self.encoder.frames_written - 1}")

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


class _PngPerFrameSink(Sink):
    """One PNG per frame in ``<out>/<folder>/``: ``<stem>.png`` for image folders, else ``<kind>_{index:06d}.png``."""

    kind = ""  # "mask" or "overlay": the outputs.csv column and the file prefix

    def __init__(self, out: Path, folder: str) -> None:
        self.out, self.folder = Path(out), folder
        claim(self.out / folder, is_dir=True)
        (self.out / folder).mkdir(parents=True, exist_ok=True)
        self.written = 0

    def _image(self, record: FrameRecord) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def write(self, record: FrameRecord) -> None:
        stem = record.name if record.name else f"{self.kind}_{record.index:06d}"
        rel = f"{self.folder}/{stem}.png"
        write_png(self.out / rel, self._image(record))
        self.written += 1
        _note(record, self.kind, rel)

    def describe(self) -> dict[str, Any]:
        return {f"{self.kind}s": f"{self.folder}/", f"{self.kind}_files": self.written}


class MaskPngSink(_PngPerFrameSink):
    """``masks/<stem>.png`` (image folders) or ``masks/mask_{index:06d}.png``, values 0/255."""

    kind = "mask"

    def __init__(self, out: Path, folder: str = "masks") -> None:
        super().__init__(out, folder)

    def _image(self, record: FrameRecord) -> np.ndarray:
        return _mask_u8(record.mask)


class OverlayPngSink(_PngPerFrameSink):
    """``overlays/<stem>.png``: the overlay of each still image, at its own size."""

    kind = "overlay"

    def __init__(self, out: Path, folder: str = "overlays") -> None:
        super().__init__(out, folder)

    def _image(self, record: FrameRecord) -> np.ndarray:
        import cv2

        return cv2.cvtColor(record.overlay, cv2.COLOR_RGB2BGR)


class OutputIndexSink(Sink):
    """``outputs.csv``: index, source file, size, mask and overlay paths, predicted IoU, presence score and
    decision, mask area (line-flushed).

    List it after the sinks whose outputs it maps. ``add_missing`` appends rows for inputs that produced nothing
    (unreadable files); ``mark_lost`` rewrites the last rows whose output a video lost (on a full disk).
    """

    TAIL = 4096  # rows kept to be rewritten (a video loses at most its last fragment: about a second of frames)

    COLUMNS = ("index", "source_file", "width", "height", "mask", "overlay", "iou_pred", "presence", "decision",
               "mask_area", "status")

    def __init__(self, out: Path, name: str = "outputs.csv") -> None:
        self.rel = name
        claim(Path(out) / name)
        self._f = open(Path(out) / name, "w", newline="", encoding="utf-8", buffering=1)
        self._w = csv.DictWriter(self._f, fieldnames=self.COLUMNS)
        self._w.writeheader()
        self.rows = 0
        self._tail: deque[tuple[int, int, dict]] = deque(maxlen=self.TAIL)  # (row, file offset, row)

    def write(self, record: FrameRecord) -> None:
        outputs = record.info.get("outputs", {})
        iou = getattr(record.result, "iou", None)
        row = {"index": record.index, "source_file": record.file or record.source,
               "width": record.width, "height": record.height, "mask": outputs.get("mask", ""),
               "overlay": outputs.get("overlay", ""),
               "iou_pred": "" if iou is None or not np.isfinite(iou) else round(float(iou), 4),
               "presence": "" if record.info.get("presence") is None else record.info["presence"],
               "decision": record.info.get("decision", ""),
               "mask_area": record.info.get("mask_area", ""),
               "status": "ok"}
        self._tail.append((self.rows, self._f.tell(), row))
        self._w.writerow(row)
        self.rows += 1

    def mark_lost(self, column: str, first_row: int, status: str) -> None:
        """Rows ``first_row`` on lost their ``column`` output: rewritten with it empty and ``status``."""
        kept = [(r, off, row) for r, off, row in self._tail if r >= first_row]
        if not kept or self._f.closed:
            return
        self._f.seek(kept[0][1])
        self._f.truncate()
        for _, _, row in kept:
            row[column] = ""
            row["status"] = status if row["status"] == "ok" else f"{row['status']}; {status}"
            self._w.writerow(row)
        self._f.flush()

    def add_missing(self, index: int | str, source_file: str, status: str) -> None:
        self._w.writerow({"index": index, "source_file": source_file, "status": status})

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def describe(self) -> dict[str, Any]:
        return {"index": self.rel}


class ReportSink(Sink):
    """Per-frame timings and results into the latency report (which streams them to disk)."""

    def __init__(self, report: LatencyReport) -> None:
        self.report = report

    def write(self, record: FrameRecord) -> None:
        result = record.result
        timings = dict(record.timings)
        latency = timings.pop("latency_capture_to_overlay", None)
        extra = {"iou_pred": round(float(result.iou), 4) if np.isfinite(result.iou) else None,
                 "passes": int(result.passes)}
        extra.update({k: v for k, v in record.info.items() if k != "outputs"})  # mask_area, layout, presence...
        self.report.add(index=record.index, latency_ms=latency, stages=timings, timestamp=record.timestamp,
                        result=extra)


class WindowSink(Sink):
    """Shows each overlay; closing the window or pressing q / Esc asks the pipeline to stop."""

    def __init__(self, title: str = "TextSAM-EUS") -> None:
        self.window = Window(title)

    def write(self, record: FrameRecord) -> None:
        if not self.window.show(record.overlay):
            self.stop_requested = True

    def close(self) -> None:
        self.window.close()

"""``outputs.csv``: :class:`OutputIndexSink`, one row per frame, input file -> output files, written as it goes.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import csv
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from ..manifest import claim
from ..record import FrameRecord
from .base import Sink

__all__ = ["OutputIndexSink"]


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

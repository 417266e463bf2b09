"""The PNG-per-frame sinks: :class:`MaskPngSink` (``masks/<stem>.png`` for image folders, else
``masks/mask_{index:06d}.png``, 0/255) and :class:`OverlayPngSink` (``overlays/<stem>.png``, image folders); each PNG
is written to a temporary name and renamed, so no half-written PNG is ever left.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..manifest import claim
from ..record import FrameRecord
from .base import Sink, mask_u8, note_output, write_png

__all__ = ["MaskPngSink", "OverlayPngSink"]


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
        note_output(record, self.kind, rel)

    def describe(self) -> dict[str, Any]:
        return {f"{self.kind}s": f"{self.folder}/", f"{self.kind}_files": self.written}


class MaskPngSink(_PngPerFrameSink):
    """``masks/<stem>.png`` (image folders) or ``masks/mask_{index:06d}.png``, values 0/255."""

    kind = "mask"

    def __init__(self, out: Path, folder: str = "masks") -> None:
        super().__init__(out, folder)

    def _image(self, record: FrameRecord) -> np.ndarray:
        return mask_u8(record.mask)


class OverlayPngSink(_PngPerFrameSink):
    """``overlays/<stem>.png``: the overlay of each still image, at its own size."""

    kind = "overlay"

    def __init__(self, out: Path, folder: str = "overlays") -> None:
        super().__init__(out, folder)

    def _image(self, record: FrameRecord) -> np.ndarray:
        import cv2

        return cv2.cvtColor(record.overlay, cv2.COLOR_RGB2BGR)

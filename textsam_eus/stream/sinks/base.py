"""What every sink is: :class:`Sink` (``write(record)`` once per processed frame, then ``close()``; ``describe()``
for ``summary.json``), and the helpers the file-writing sinks share.

A new output is one class with ``write(record)`` and ``close()``, in its own module of this folder, named in the
registry (:mod:`~textsam_eus.stream.sinks.registry`). Sinks that write files note the path they wrote in
``record.info["outputs"]`` (relative to the output folder, :func:`note_output`), so the
:class:`~textsam_eus.stream.sinks.index.OutputIndexSink`, listed after them, maps every input frame to its outputs.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..manifest import claim
from ..record import FrameRecord
from .encoders import SinkError

__all__ = ["Sink", "write_png", "note_output", "mask_u8"]


def write_png(path: Path, image: np.ndarray, compression: int = 1) -> None:
    """Encode ``image`` as PNG and put it at ``path`` atomically (temporary name, then rename)."""
    import cv2

    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise SinkError(f"PNG encoding failed for {path}")
    part = path.with_name(path.name + ".part")
    claim(path)  # listed as the run's own before it exists (with its .part)
    try:
        buf.tofile(str(part))  # works with non-ASCII paths
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def note_output(record: FrameRecord, key: str, rel: str) -> None:
    record.info.setdefault("outputs", {})[key] = rel


def mask_u8(mask: np.ndarray) -> np.ndarray:
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

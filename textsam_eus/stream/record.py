"""The unit of work that flows through the streaming pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Frame"]


@dataclass
class Frame:
    """One decoded / captured video frame.

    Attributes:
        index: 0-based position of the frame in its source (counts delivered frames).
        image: ``H x W x 3`` uint8 RGB, C-contiguous.
        timestamp: capture time, ``time.monotonic()`` seconds when the frame was
            grabbed (live) or decoded (file).  Used for capture-to-overlay latency.
        pts: presentation time in seconds from the container, ``None`` for live sources.
        source: human-readable description of the source (path, device, ...).
    """

    index: int
    image: np.ndarray
    timestamp: float
    pts: float | None
    source: str

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return (self.width, self.height)

    def __repr__(self) -> str:  # keep the pixel array out of logs
        pts = "None" if self.pts is None else f"{self.pts:.4f}"
        return (
            f"Frame(index={self.index}, size={self.width}x{self.height}, "
            f"timestamp={self.timestamp:.4f}, pts={pts}, source={self.source!r})"
        )

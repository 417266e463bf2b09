"""The draw stage: presence decides the outline, then the overlay and its HUD; size changes and mask stability.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from ...model.mask_metrics import mask_iou
from ..overlay import OverlayStyle, draw_overlay, hud_box_size, quiet_corner
from ..record import FrameRecord
from .presence import PresencePolicy

__all__ = ["DrawStage"]


class DrawStage:
    """Sets ``rec.overlay`` (H x W x 3 uint8 RGB): the mask's outline (as ``policy`` decides) and, with
    ``style.hud``, a HUD in the corner quietest on the first frame (then kept: it does not jump around). The HUD
    reads the engine and fps; then, for a live source, capture-to-overlay latency (what the endoscopist sees), for
    a file the model's time per frame (its queueing is no latency anyone waits for); the IoU; the status.

    State: the draw times of the last second (the HUD's fps), the HUD's place, and, in frame order, the frame size
    (``size_changes``) and the IoU between consecutive masks (its mean goes to ``summary.json``)."""

    name = "draw"

    def __init__(self, engine, source, policy: PresencePolicy, style: OverlayStyle) -> None:
        self.engine = engine
        self.policy = policy
        self.style = style
        self.source = source
        self.size_changes = 0
        self._size: tuple[int, int] | None = None
        self._prev_mask: np.ndarray | None = None
        self._stability = [0.0, 0]  # sum, count of consecutive-frame mask IoU
        self._fps_window: deque[float] = deque()  # draw times of the last second (the HUD's fps)
        self._hud_at: tuple[int, int] | None = None  # where the HUD box goes (overlay.quiet_corner, first frame)

    def _track(self, rec: FrameRecord) -> None:
        """Size changes and the mask IoU between consecutive frames (in frame order)."""
        if rec.size != self._size:
            if self._size is not None:
                self.size_changes += 1
                rec.info["size_changed"] = f"{self._size[0]}x{self._size[1]}->{rec.width}x{rec.height}"
            self._size, self._prev_mask = rec.size, None
        if self._prev_mask is not None:
            self._stability[0] += mask_iou(rec.mask, self._prev_mask)
            self._stability[1] += 1
        self._prev_mask = rec.mask

    def _hud_lines(self, rec: FrameRecord, now: float, status: list[str]) -> list[str]:
        iou = rec.result.iou
        iou_text = f"IoU {iou:.2f}" if np.isfinite(iou) else "IoU n/a"
        if self.source.is_live:
            timing = f"latency {(now - rec.timestamp) * 1e3:.0f} ms"
        else:
            timing = f"model {rec.timings.get('engine_total', 0.0):.0f} ms"
        return [f"{self.engine.name} | {len(self._fps_window)} fps", f"{timing} | {iou_text}", *status]

    def __call__(self, rec: FrameRecord) -> FrameRecord:
        faded, status = self.policy.decide(rec)
        rec.info["mask_area"] = int(np.count_nonzero(rec.mask))  # what is written; the sinks report it
        self._track(rec)
        t = time.perf_counter()
        now = time.monotonic()
        self._fps_window.append(now)
        while now - self._fps_window[0] >= 1.0:
            self._fps_window.popleft()
        hud = None
        if self.style.hud:
            hud = self._hud_lines(rec, now, status)
            if self._hud_at is None:  # chosen on the first frame, then kept: the HUD does not jump around
                self._hud_at = quiet_corner(rec.image, hud_box_size([*hud, "tumour? (presence 0.00)"], self.style))
        rec.overlay = draw_overlay(rec.image, rec.mask, self.style, hud, faded=faded, hud_at=self._hud_at)
        rec.timings["overlay"] = (time.perf_counter() - t) * 1e3
        rec.timings["latency_capture_to_overlay"] = (time.monotonic() - rec.timestamp) * 1e3
        return rec

    @property
    def mask_iou_mean(self) -> float | None:
        total, n = self._stability
        return total / n if n else None

    def describe(self) -> dict[str, Any]:
        return {"size_changes": self.size_changes, "consecutive_mask_iou_mean": self.mask_iou_mean}

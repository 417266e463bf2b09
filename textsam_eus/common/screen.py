"""The layout of an EUS processor screen: where the B-mode imaging sector is (``stream --roi auto``, and the
crop of training frames taken from screen recordings).

An EUS screen shows the image as a convex (curved-array) fan on black, surrounded by graphics: depth ticks, a grey
bar, logos, text, a probe pictogram. In a dual-panel elastography view two fans stand side by side (elastography
left, B-mode right on the processors of the EUS database); colour Doppler draws a box of colour inside the fan.

:class:`LayoutTracker` finds the fan(s) on a quarter-resolution copy of each frame: the pixels that are not black
in any of the last few frames (so a dark cyst or shadow does not eat into the sector), a morphological opening that
cuts off thin graphics, the large connected parts, and the convex hull of each. Two large parts side by side are a
dual-panel view: the B-mode panel is the one with less colour (the right one when both look alike). The layout is
kept while new estimates agree with it and replaced after ``switch_after`` frames that disagree (the operator
changed mode or depth), so it does not flicker. No sector at all (a black or frozen-blank screen) gives ``None``.

The stream segments the bounding box of the B-mode sector with everything outside the sector blacked out, and
clips every mask to the sector. Used by ``stream`` and ``train``; needs only NumPy and OpenCV.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..core.mask_metrics import mask_iou

__all__ = ["ScreenLayout", "LayoutTracker", "EUS_DB_CROP", "EUS_DB_SCREEN_SIZE"]

# The one home of the EUS pancreas database's screen geometry (training crops, the eus800x600 ROI preset): its
# frames are the 800x600 processor screen cropped to rows 57-513, cols 45-755 (1-based, inclusive), i.e.
# (x, y, w, h) = frame[56:513, 44:755], 711x457 pixels.
EUS_DB_SCREEN_SIZE = (800, 600)  # (width, height) of the raw screen grabs
EUS_DB_CROP = (44, 56, 711, 457)


@dataclass
class ScreenLayout:
    """Where the B-mode imaging sector of a screen is.

    Attributes:
        kind: ``"single"`` (one fan) or ``"dual"`` (two panels; the sector is the B-mode one).
        small: the sector found at the tracker's resolution (bool); ``mask`` and ``bbox`` are made from it at
            full resolution when first asked for.
        frame_size: (width, height) of the frames it was found in.
        panels: the bounding boxes (x, y, w, h) of every panel found (left to right), full-frame pixels.
        doppler_box: (x, y, w, h) of a colour-Doppler box inside the sector, else ``None``.
        id: increases by one at every layout change of a run.
    """

    kind: str
    small: np.ndarray
    frame_size: tuple[int, int]
    panels: list[tuple[int, int, int, int]]
    doppler_box: tuple[int, int, int, int] | None = None
    id: int = 0
    _mask: np.ndarray | None = field(default=None, repr=False)
    _bbox: tuple[int, int, int, int] | None = field(default=None, repr=False)

    @property
    def mask(self) -> np.ndarray:
        """H x W uint8 0/1: the sector in full-frame pixels."""
        if self._mask is None:
            import cv2

            w, h = self.frame_size
            self._mask = (cv2.resize(self.small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
                          > 0.5).astype(np.uint8)
        return self._mask

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """The sector's bounding box (x, y, w, h): what the model sees."""
        if self._bbox is None:
            ys, xs = np.nonzero(self.mask)
            self._bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        return self._bbox

    @property
    def slices(self) -> tuple[slice, slice]:
        x, y, w, h = self.bbox
        return slice(y, y + h), slice(x, x + w)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The sector's bounding box of ``image`` with everything outside the sector set to black (a copy)."""
        ys, xs = self.slices
        out = image[ys, xs].copy()
        out[self.mask[ys, xs] == 0] = 0
        return out

    def paste(self, crop_mask: np.ndarray) -> np.ndarray:
        """A mask of :meth:`crop`'s size back in the full frame, clipped to the sector (uint8 0/1)."""
        w, h = self.frame_size
        out = np.zeros((h, w), np.uint8)
        ys, xs = self.slices
        out[ys, xs] = crop_mask
        return out & self.mask

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "bbox": list(self.bbox), "panels": [list(p) for p in self.panels],
                "doppler_box": list(self.doppler_box) if self.doppler_box else None,
                "sector_area_frac": round(float(self.mask.mean()), 4)}

    def short(self) -> str:
        """One field for the per-frame report, e.g. ``1:dual:398,40,380,430``."""
        return f"{self.id}:{self.kind}:{','.join(map(str, self.bbox))}" + (":doppler" if self.doppler_box else "")


class LayoutTracker:
    """Find and track the imaging sector over the frames of one stream (see the module docstring).

    Args:
        scale: work at 1/scale of the frame size.
        window: frames whose non-black pixels are joined for one estimate.
        black_level: gray value (0..255) at or below which a pixel counts as black.
        min_area_frac: the smallest panel, as a fraction of the frame.
        switch_after: disagreeing estimates in a row that replace the layout.
        agree_iou: an estimate with at least this IoU with the current sector agrees with it.
    """

    def __init__(self, scale: int = 4, window: int = 5, black_level: int = 6, min_area_frac: float = 0.04,
                 switch_after: int = 3, agree_iou: float = 0.85) -> None:
        self.scale, self.black_level = int(scale), int(black_level)
        self.min_area_frac, self.switch_after, self.agree_iou = min_area_frac, int(switch_after), agree_iou
        self._recent: deque[np.ndarray] = deque(maxlen=int(window))
        self.layout: ScreenLayout | None = None
        self._disagree = 0
        self.changes = 0
        self.history: list[dict[str, Any]] = []  # the first layouts of the run (bounded)

    # ------------------------------------------------------------------ per frame
    def update(self, image: np.ndarray) -> ScreenLayout | None:
        """The layout for this frame (``image``: H x W x 3 uint8 RGB)."""
        import cv2

        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, w // self.scale), max(1, h // self.scale)), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        if self._recent and self._recent[0].shape != gray.shape:
            self._recent.clear()  # the frame size changed
        self._recent.append((gray > self.black_level).view(np.uint8))
        seam = self._find_seam(cv2.cvtColor(image[h // 5: 4 * h // 5: 4], cv2.COLOR_RGB2GRAY))
        estimate = self._estimate(self._union(), small, (w, h), seam)
        switch = self._decide(estimate)
        if switch and self.layout is not None and len(self._recent) > self.switch_after:
            # a mode change: forget the frames of the old mode, so the new layout is not a blend of both
            self._recent = deque(list(self._recent)[-self.switch_after:], maxlen=self._recent.maxlen)
            estimate = self._estimate(self._union(), small, (w, h), seam)
        if switch:
            self._set(estimate)
        return self.layout

    def _union(self) -> np.ndarray:
        """uint8 0/1: the pixels that were not black in any of the recent frames."""
        import cv2

        out = self._recent[0].copy()
        for m in list(self._recent)[1:]:
            cv2.bitwise_or(out, m, dst=out)
        return out

    def _decide(self, est: ScreenLayout | None) -> bool:
        """True when ``est`` should replace the current layout."""
        cur = self.layout
        if cur is None and est is None:
            return False
        if cur is not None and est is not None and est.frame_size == cur.frame_size \
                and mask_iou(est.small, cur.small) >= self.agree_iou:
            self._disagree = 0
            if est.doppler_box != cur.doppler_box:  # a Doppler box comes and goes within the same sector
                self.layout = replace(cur, doppler_box=est.doppler_box)  # records in flight keep theirs
            return False
        self._disagree += 1
        return cur is None or (est is not None and est.frame_size != cur.frame_size) \
            or self._disagree >= self.switch_after

    def _set(self, est: ScreenLayout | None) -> None:
        if self.layout is not None:
            self.changes += 1
        if est is not None:
            est.id = self.changes
        self.layout, self._disagree = est, 0
        if len(self.history) < 20:
            self.history.append(est.describe() if est is not None else {"id": self.changes, "kind": "none"})

    # ------------------------------------------------------------------ one estimate
    def _estimate(self, nonblack: np.ndarray, small: np.ndarray, size: tuple[int, int],
                  seam: int | None) -> ScreenLayout | None:
        import cv2

        m = nonblack  # a fresh array from _union(): changed in place
        if seam is not None:
            m[:, seam // self.scale] = 0  # a dual-panel view: keep the panels apart
        body = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((9, 9), np.uint8))  # cut ticks, text, bars, strips
        n, labels, stats, _ = cv2.connectedComponentsWithStats(body, connectivity=4)
        min_area = self.min_area_frac * m.size
        parts = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
        if not parts:
            return None
        parts.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
        kind, panels, main = "single", [parts[0]], parts[0]
        if seam is not None and len(parts) > 1:
            a, b = sorted(parts[:2], key=lambda i: stats[i, cv2.CC_STAT_LEFT])
            if stats[a, cv2.CC_STAT_LEFT] < seam // self.scale <= stats[b, cv2.CC_STAT_LEFT]:
                kind, panels = "dual", [a, b]
                main = self._bmode_panel(panels, labels, small)
        contours, _ = cv2.findContours((labels == main).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull_small = np.zeros(m.shape, np.uint8)
        cv2.fillPoly(hull_small, [cv2.convexHull(np.vstack(contours))], 1)
        sector = self._drop_notches(hull_small, cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)))
        if sector.sum() < min_area:
            return None
        w, h = size
        s = self.scale
        panel_rois = [(int(stats[i, 0] * s), int(stats[i, 1] * s), int(min(w - stats[i, 0] * s, stats[i, 2] * s)),
                       int(min(h - stats[i, 1] * s, stats[i, 3] * s))) for i in panels]
        doppler = self._doppler_box(sector, small)
        return ScreenLayout(kind=kind, small=sector, frame_size=size, panels=panel_rois, doppler_box=doppler)

    @staticmethod
    def _drop_notches(hull: np.ndarray, region: np.ndarray) -> np.ndarray:
        """The hull less the black parts that reach its top edge (the transducer's dome); black parts inside it or
        at its sides and bottom (cysts, shadows, a dark far field) stay in the sector."""
        import cv2

        black = (hull > 0) & (region == 0)
        n, labels = cv2.connectedComponents(black.astype(np.uint8), connectivity=4)
        if n <= 1:
            return hull > 0
        rows = np.nonzero(hull.any(axis=1))[0]
        top = rows[0] + max(1, (rows[-1] - rows[0]) // 5)
        edge = (hull > 0) & ~cv2.erode(hull, np.ones((3, 3), np.uint8)).astype(bool)
        edge[top:] = False
        notch_ids = np.unique(labels[edge & black])
        notches = np.isin(labels, notch_ids[notch_ids > 0])
        return (hull > 0) & ~notches

    @staticmethod
    def _find_seam(band: np.ndarray) -> int | None:
        """The x of the one-pixel black column between the two panels of a dual view, else None (``band``: gray
        rows from the middle of the frame, at full width)."""
        import cv2

        w = band.shape[1]
        col = cv2.reduce(band, 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()
        lo, hi = int(0.3 * w), int(0.7 * w)
        for x in range(lo, hi):
            if col[x] < 3 and col[max(0, x - 4)] > 12 and col[min(w - 1, x + 4)] > 12:
                return x
        return None

    @staticmethod
    def _saturation(small: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.cvtColor(small, cv2.COLOR_RGB2HSV)[:, :, 1]

    def _bmode_panel(self, panels: list[int], labels: np.ndarray, small: np.ndarray) -> int:
        sat = self._saturation(small)
        colour = [float((sat[labels == i] > 60).mean()) for i in panels]
        if abs(colour[0] - colour[1]) < 0.01:
            return panels[-1]  # both gray: the B-mode panel is the right one on these processors
        return panels[int(np.argmin(colour))]

    def _doppler_box(self, region: np.ndarray, small: np.ndarray) -> tuple[int, int, int, int] | None:
        """The box around the colour-Doppler pixels (saturated reds/oranges and blues/cyans) inside the sector;
        yellow/green graphics (ROI outlines, text) do not count."""
        import cv2

        r, g, b = cv2.split(small)
        chroma = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))  # vivid colour, not gray noise
        colour = (chroma > 70) & region
        if int(colour.sum()) < 4:
            return None
        hue = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)[:, :, 0]
        colour &= (hue < 22) | (hue > 155) | ((hue > 85) & (hue < 130))
        if int(colour.sum()) < max(4, 0.002 * region.sum()):
            return None
        ys, xs = np.nonzero(colour)
        s = self.scale
        return (int(xs.min() * s), int(ys.min() * s), int((xs.max() - xs.min() + 1) * s),
                int((ys.max() - ys.min() + 1) * s))

    def describe(self) -> dict[str, Any]:
        return {"current": self.layout.describe() if self.layout is not None else None, "changes": self.changes,
                "history": list(self.history)}

"""Regions of interest: crop the ultrasound sector out of the processor screen and map masks back."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..common.screen import EUS_DB_CROP
from ..core.errors import OptionError
from .base import SourceError

# --------------------------------------------------------------------------- ROI

_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "eus800x600": EUS_DB_CROP,  # the EUS database's image area of an 800x600 processor screen (common/screen.py)
}


@dataclass
class ROI:
    """Axis-aligned region of interest in pixel coordinates (0-based, ``w`` x ``h``)."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        for f in ("x", "y", "w", "h"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise OptionError(f"ROI.{f} must be an int, got {v!r}")
            setattr(self, f, int(v))
        if self.x < 0 or self.y < 0:
            raise OptionError(f"ROI x/y must be >= 0, got x={self.x}, y={self.y}")
        if self.w <= 0 or self.h <= 0:
            raise OptionError(f"ROI w/h must be > 0, got w={self.w}, h={self.h}")

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"

    @classmethod
    def parse(cls, text: str) -> "ROI":
        """Parse ``'x,y,w,h'`` (a preset name is accepted too)."""
        if isinstance(text, ROI):
            return text
        t = str(text).strip()
        if t.lower() in _PRESETS:
            return cls.preset(t)
        parts = [p.strip() for p in t.replace(";", ",").split(",")]
        if len(parts) != 4 or not all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
            raise OptionError(f"invalid ROI {text!r}: expected 'x,y,w,h' (four integers, e.g. "
                              f"'{','.join(map(str, EUS_DB_CROP))}') or a preset name ({', '.join(_PRESETS)})")
        x, y, w, h = (int(p) for p in parts)
        try:
            return cls(x, y, w, h)
        except ValueError as e:
            raise OptionError(f"invalid ROI {text!r}: {e}") from None

    @classmethod
    def preset(cls, name: str) -> "ROI":
        key = str(name).strip().lower()
        if key not in _PRESETS:
            raise OptionError(f"unknown ROI preset {name!r}; available: {', '.join(_PRESETS)}")
        return cls(*_PRESETS[key])

    @classmethod
    def full(cls, width: int, height: int) -> "ROI":
        return cls(0, 0, int(width), int(height))

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    def fits(self, width: int, height: int) -> bool:
        return self.x + self.w <= width and self.y + self.h <= height

    def validate(self, width: int, height: int) -> "ROI":
        """Raise :class:`SourceError` when the ROI does not lie inside a ``width x height`` frame."""
        if self.fits(width, height):
            return self
        msg = (f"ROI {self} (x={self.x}, y={self.y}, w={self.w}, h={self.h}; right edge "
               f"{self.x + self.w}, bottom edge {self.y + self.h}) lies outside the "
               f"{width}x{height} frame.")
        cw, ch = width - self.x, height - self.y
        if cw > 0 and ch > 0:
            fixed = ROI(self.x, self.y, min(self.w, cw), min(self.h, ch))
            msg += f" Fix: use --roi {fixed} (clipped to the frame)"
        else:
            msg += " Fix: choose a ROI inside the frame"
        msg += (f", --roi 0,0,{width},{height} for the full frame, or a preset matching the "
                f"screen size ({', '.join(_PRESETS)}).")
        raise SourceError(msg)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The ROI view of ``image`` (no copy). Raises SourceError if it does not fit."""
        h, w = image.shape[:2]
        self.validate(w, h)
        ys, xs = self.slices
        return image[ys, xs]

    def paste(self, full_shape: tuple[int, ...], mask_roi: np.ndarray) -> np.ndarray:
        """Map a ROI-sized mask back to full-frame coordinates (zeros outside the ROI)."""
        fh, fw = int(full_shape[0]), int(full_shape[1])
        mask_roi = np.asarray(mask_roi)
        if mask_roi.shape[:2] != (self.h, self.w):
            raise ValueError(f"mask shape {mask_roi.shape[:2]} does not match ROI {self} "
                             f"(expected {(self.h, self.w)})")
        self.validate(fw, fh)
        out = np.zeros((fh, fw) + mask_roi.shape[2:], dtype=mask_roi.dtype)
        ys, xs = self.slices
        out[ys, xs] = mask_roi
        return out


def list_presets() -> dict[str, ROI]:
    """Available ROI presets: name -> ROI."""
    return {k: ROI(*v) for k, v in _PRESETS.items()}


"""More negatives without new data: lesion-free images varied the way ultrasound actually varies.

A scanner's gain and dynamic range, the imaging depth (zoom), the speckle, the shape and position of the imaging
sector and the text and graphics a scanner draws over the image all change from one examination to the next; none
of them makes a tumour. :func:`ultrasound_variant` applies a random draw of them to one lesion-free image (H, W, 3)
uint8 -> (H, W, 3) uint8; :func:`negative_variants` makes ``k`` seeded variants of each lesion-free pair. Variants
are not independent evidence (they share their source's anatomy): ``train`` adds them to the train and
calibration parts beside their source and does not count them as calibration negatives in its warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import cv2
import numpy as np

from ..core.config import ConfigError
from ..core.errors import OptionError

__all__ = ["VariantConfig", "ultrasound_variant", "negative_variants"]

_TEXTS = ("7.5MHz", "12MHz", "G 54", "G 61", "D 6.0cm", "D 9cm", "FR 15", "FR 30", "PWR 100%", "DR 60", "B-MODE",
          "EUS", "PANC", "HEAD", "BODY", "1/2", "+ 1.2cm", "THI")
_COLOURS = ((255, 255, 255), (200, 200, 200), (90, 220, 90), (240, 220, 60), (90, 200, 255))


@dataclass(frozen=True)
class VariantConfig:
    """Ranges of the variations (each draw picks a value uniformly in its range; a probability of 0 leaves that
    variation out)."""

    gain: tuple[float, float] = (0.7, 1.4)  # overall brightness (receiver gain)
    gamma: tuple[float, float] = (0.75, 1.3)  # log-compression / dynamic range
    zoom: tuple[float, float] = (0.7, 1.3)  # imaging depth: < 1 shows less depth (zoom in), > 1 more (zoom out)
    speckle: float = 0.3  # strength of extra multiplicative Rayleigh speckle
    sector: float = 0.6  # probability of cutting the image to a fan-shaped sector (black outside)
    sector_half_angle: tuple[float, float] = (30.0, 70.0)  # degrees either side of the fan's axis
    sector_shift: float = 0.15  # the apex moves up to this share of the width sideways
    overlay: float = 0.7  # probability of scanner text and graphics (labels, a depth ruler, caliper marks)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                ok = len(v) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in v) \
                    and v[0] <= v[1] and (f.name != "sector_half_angle" or v[1] < 90)
                fix = "two positive numbers (low, high) with low <= high" + (", below 90" if f.name ==
                                                                                 "sector_half_angle" else "")
            else:
                ok = isinstance(v, (int, float)) and 0 <= v <= 1
                fix = "a number in [0, 1]"
            if not ok:
                raise ConfigError(f"VariantConfig.{f.name}={v!r} is invalid: give {fix}")


def _zoom(x: np.ndarray, z: float) -> np.ndarray:
    """Imaging depth: z < 1 keeps the top z of the depth (the transducer's side) and fills the frame with it;
    z > 1 shrinks the image into the top of a black frame (more depth, smaller anatomy)."""
    h, w = x.shape[:2]
    if z < 1:
        ch, cw = max(2, int(round(h * z))), max(2, int(round(w * z)))
        x0 = (w - cw) // 2
        return cv2.resize(x[:ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    sh, sw = max(2, int(round(h / z))), max(2, int(round(w / z)))
    out = np.zeros_like(x)
    x0 = (w - sw) // 2
    out[:sh, x0:x0 + sw] = cv2.resize(x, (sw, sh), interpolation=cv2.INTER_AREA)
    return out


def _sector(h: int, w: int, rng: np.random.Generator, cfg: VariantConfig) -> np.ndarray:
    """A fan-shaped mask (H, W) bool: apex above the top edge, shifted sideways, a random aperture and depth."""
    cx = w / 2 + rng.uniform(-cfg.sector_shift, cfg.sector_shift) * w
    cy = -rng.uniform(0.05, 0.3) * h
    half = math.radians(rng.uniform(*cfg.sector_half_angle))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(xx - cx, yy - cy)
    angle = np.arctan2(xx - cx, yy - cy)  # 0 along the axis (straight down)
    r0 = -cy + rng.uniform(0.0, 0.08) * h
    r1 = -cy + h * rng.uniform(0.85, 1.1)
    return (np.abs(angle) <= half) & (r >= r0) & (r <= r1)


def _overlay(x: np.ndarray, rng: np.random.Generator) -> None:
    """Scanner text in the corners, a depth ruler along one side and, sometimes, caliper crosses (in place)."""
    h, w = x.shape[:2]
    scale = max(0.25, min(h, w) / 700)
    thick = max(1, int(round(scale * 2)))
    for _ in range(int(rng.integers(1, 5))):
        text = _TEXTS[int(rng.integers(len(_TEXTS)))]
        colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        px = int(rng.choice([2, max(2, w - tw - 2)]))
        py = int(rng.uniform(th + 2, max(th + 3, h - 2)))
        cv2.putText(x, text, (px, py), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    if rng.random() < 0.7:  # a depth ruler: a line with ticks every few millimetres
        rx = int(rng.choice([max(1, int(0.03 * w)), min(w - 2, int(0.97 * w))]))
        colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
        cv2.line(x, (rx, 0), (rx, h - 1), colour, 1)
        step = max(4, int(h / rng.uniform(6, 16)))
        for y in range(0, h, step):
            cv2.line(x, (rx - 3, y), (rx + 3, y), colour, 1)
    for _ in range(int(rng.integers(0, 3))):  # caliper crosses, as left by a measurement
        cx, cy, s = int(rng.integers(0, w)), int(rng.integers(0, h)), max(3, int(0.02 * min(h, w)))
        colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
        cv2.line(x, (cx - s, cy), (cx + s, cy), colour, 1)
        cv2.line(x, (cx, cy - s), (cx, cy + s), colour, 1)


def tone_and_speckle(image: np.ndarray, rng: np.random.Generator, gamma: tuple[float, float],
                     gain: tuple[float, float], speckle: float) -> np.ndarray:
    """(H, W, 3) uint8 -> uint8: a gamma and a gain drawn from the ranges, then multiplicative Rayleigh speckle of
    strength ``speckle`` (drawn at half size, blurred, mean 1): how an ultrasound image's look varies. The training
    augmentation (``training_set.augment``) and the negative variants share it (draws in this order)."""
    h, w = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    x = np.power(x, rng.uniform(*gamma)) * rng.uniform(*gain)
    if speckle > 0:
        noise = rng.rayleigh(1.0, (h // 2 + 1, w // 2 + 1)).astype(np.float32)
        noise = cv2.resize(cv2.GaussianBlur(noise, (3, 3), 0.8), (w, h)) / 1.2533
        x = x * (1 + speckle * (noise[..., None] - 1))
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def ultrasound_variant(image: np.ndarray, rng: np.random.Generator, cfg: VariantConfig | None = None
                       ) -> np.ndarray:
    """One variant of a lesion-free (H, W, 3) uint8 image: depth (zoom), gain/gamma, speckle, a sector cut and
    scanner overlays, each drawn from ``rng``; the output is (H, W, 3) uint8 of the same size."""
    cfg = cfg or VariantConfig()
    x = np.ascontiguousarray(image)
    if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {x.shape} {x.dtype}")
    h, w = x.shape[:2]
    x = _zoom(x, rng.uniform(*cfg.zoom))
    out = tone_and_speckle(x, rng, cfg.gamma, cfg.gain, cfg.speckle)
    if rng.random() < cfg.sector:
        out[~_sector(h, w, rng, cfg)] = 0
    if rng.random() < cfg.overlay:
        _overlay(out, rng)
    return out


def negative_variants(pairs: Sequence[tuple[np.ndarray, np.ndarray]], k: int, seed: int = 0,
                      cfg: VariantConfig | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` variants of each lesion-free pair (those whose mask is all zero; the others are skipped), each with
    an all-zero mask of its size; the ``j``-th variant of the ``i``-th pair is drawn from
    ``numpy.random.default_rng((seed, i, j))``."""
    if k < 0:
        raise OptionError(f"--negative-variants {k} is invalid: give the number of variants per lesion-free image "
                          "(0: none)")
    out = []
    for i, (image, mask) in enumerate(pairs):
        if mask is None or np.asarray(mask).any():
            continue
        for j in range(k):
            v = ultrasound_variant(np.asarray(image), np.random.default_rng((seed, i, j)), cfg)
            out.append((v, np.zeros(v.shape[:2], np.uint8)))
    return out

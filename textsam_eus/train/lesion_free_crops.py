"""More negatives without new data: crops of lesion images that hold no lesion pixel.

A window of a lesion image that misses the lesion entirely is a real lesion-free ultrasound image of the same
scanner, tissue and gain, at a scale the model sees (each side at least ``min_side`` of the image's shorter side,
so the model resizes it no more than it resizes a whole frame twice). :func:`lesion_free_windows` finds up to ``n``
such windows in one mask, drawn from a seeded generator, each overlapping the ones before by at most
``max_overlap`` (IoU); :func:`lesion_free_crops` makes them :class:`~textsam_eus.train.readers.Sample` s that load
lazily (the window is the sample's ``crop``, in the file's own pixels), keep their source image's ``case`` (so a
crop never lands in another part of a split than its image: the caller puts it in its image's part) and have
``source`` :data:`~textsam_eus.train.negative_split.CROP_SOURCE` and no mask (an all-zero mask when loaded).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..model.errors import OptionError
from .negative_split import CROP_SOURCE
from .readers import EUS_SCREEN_CROP, Sample, _apply_crop, read_mask

__all__ = ["lesion_free_windows", "lesion_free_crops"]

Window = tuple[int, int, int, int]  # x, y, w, h


def _iou(a: Window, b: Window) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def lesion_free_windows(mask: np.ndarray, n: int, rng: np.random.Generator, min_side: float = 0.5,
                        max_overlap: float = 0.5, tries: int = 40) -> list[Window]:
    """Up to ``n`` windows ``(x, y, w, h)`` of the (H, W) ``mask`` that contain no nonzero pixel.

    Each try draws a width and a height in ``[min_side * min(H, W), W]`` and ``[min_side * min(H, W), H]`` and
    picks one of the lesion-free positions of that size at random (a summed-area table finds them all at once);
    a window overlapping an earlier one by more than ``max_overlap`` is dropped. Fewer than ``n`` (none at all)
    when the lesion leaves no room. The same generator state gives the same windows.
    """
    if not 0 < min_side <= 1:
        raise OptionError(f"min_side={min_side!r} is invalid: give a share of the shorter side in (0, 1], e.g. 0.5")
    m = np.asarray(mask) != 0
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    H, W = m.shape
    lo = max(1, int(np.ceil(min_side * min(H, W))))
    sat = np.zeros((H + 1, W + 1), np.int64)
    sat[1:, 1:] = m.cumsum(0).cumsum(1)
    found: list[Window] = []
    for _ in range(tries):
        if len(found) >= n:
            break
        w, h = int(rng.integers(lo, W + 1)), int(rng.integers(lo, H + 1))
        # lesion pixels in every h x w window at once: (H - h + 1, W - w + 1)
        inside = sat[h:, w:] - sat[:-h, w:] - sat[h:, :-w] + sat[:-h, :-w]
        ys, xs = np.nonzero(inside == 0)
        if ys.size == 0:
            continue
        k = int(rng.integers(ys.size))
        win = (int(xs[k]), int(ys[k]), w, h)
        if all(_iou(win, other) <= max_overlap for other in found):
            found.append(win)
    return found


def _origin(sample: Sample, raw_shape: tuple[int, int], cropped_shape: tuple[int, int]) -> tuple[int, int]:
    """Where the sample's own crop starts in its file (a window of the cropped frame -> the file's pixels)."""
    if tuple(cropped_shape) == tuple(raw_shape):
        return 0, 0  # no crop, or an already cropped frame left alone
    if isinstance(sample.crop, str):  # "eus": the EUS screen crop
        return EUS_SCREEN_CROP[0], EUS_SCREEN_CROP[1]
    return int(sample.crop[0]), int(sample.crop[1])


def lesion_free_crops(samples: Sequence[Sample], per_image: int, seed: int = 0, min_side: float = 0.5
                      ) -> list[Sample]:
    """Up to ``per_image`` lesion-free crops of each lesion image in ``samples`` (those with a mask file holding a
    lesion pixel; the others are skipped), in input order. Each image's windows come from a generator seeded with
    ``seed`` and the image's file name and case, so they do not depend on the other samples or the folder."""
    if per_image < 0:
        raise OptionError(f"--lesion-free-crops {per_image} is invalid: give the number of crops per lesion image "
                          "(0: none)")
    out: list[Sample] = []
    if per_image == 0:
        return out
    for s in samples:
        if s.mask is None:
            continue
        raw = read_mask(s.mask)
        mask = _apply_crop(raw, s.crop, f"mask {s.mask}")
        if not mask.any():
            continue
        key = zlib.crc32(f"{Path(s.image).name}|{s.case}".encode())
        rng = np.random.default_rng([seed, key])
        x0, y0 = _origin(s, raw.shape[:2], mask.shape[:2])
        for x, y, w, h in lesion_free_windows(mask, per_image, rng, min_side):
            out.append(Sample(image=s.image, mask=None, case=s.case, split=s.split, source=CROP_SOURCE,
                              crop=(x0 + x, y0 + y, w, h)))
    return out

"""Honest calibration: lesion-free images split by group into train / calibration / test.

The presence threshold must be fitted on negatives the model never trained on, and judged on negatives it was
neither trained nor fitted on: a threshold fitted and measured on the same few validation negatives looks far
more specific than it is. :func:`split_negatives` deals the lesion-free images out into three parts by *group*,
never image-wise, deterministically from a seed:

* the group of an image is its ``case`` (a patient id, or the near-duplicate group a manifest gives, as
  ``ultrasound_normal/manifest.csv`` does), merged with every other case that holds a near-duplicate of one of its
  images by a 64-bit difference hash (:func:`image_dhash`, Hamming distance at most :data:`HASH_MAX_DISTANCE`), so
  two shots of one scan never sit on both sides of the split even when the ids miss it;
* an image that already carries a split (``split`` column / split folders) keeps it: ``train`` -> train, ``val``
  -> calibration, ``test`` -> test (its whole group follows it).

A negative is a sample without a mask file that is not a frame of a cancer patient (EUS-database cancer frames
without an outline are not lesion-free; they stay with the lesion images).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import cv2
import numpy as np

from ..model.errors import OptionError
from .readers import DatasetError, Sample, read_image

__all__ = ["NEGATIVE_PARTS", "CROP_SOURCE", "HASH_MAX_DISTANCE", "is_negative", "parse_fractions", "image_dhash",
           "negative_groups", "split_negatives", "part_counts"]

NEGATIVE_PARTS: tuple[str, str, str] = ("train", "calibration", "test")
#: near-duplicates: at most this many of the 64 hash bits differ (BUSI's own duplicate groups differ by <= 8)
HASH_MAX_DISTANCE = 8
_FROM_SPLIT = {"train": "train", "val": "calibration", "test": "test"}


#: ``Sample.source`` of a lesion-free crop of a lesion image (:mod:`textsam_eus.train.lesion_free_crops`)
CROP_SOURCE = "lesion-free-crop"


def is_negative(sample: Sample) -> bool:
    """A lesion-free image: no mask file, and not a frame of a cancer patient (a lesion-free crop of any lesion
    image is one)."""
    return sample.mask is None and (sample.source or "").lower() != "cancer"


def parse_fractions(text: str | Sequence[float], flag: str = "--negative-split") -> tuple[float, float, float]:
    """``"0.6,0.2,0.2"`` -> (train, calibration, test) shares of the groups; an OptionError names the flag."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values) \
            or not math.isclose(sum(values), 1.0, abs_tol=1e-6) or values[1] <= 0:
        raise OptionError(f"{flag} {text!r} is invalid: give three non-negative shares TRAIN,CALIBRATION,TEST that "
                          "sum to 1 with a positive calibration share, e.g. 0.6,0.2,0.2")
    return values[0], values[1], values[2]


def image_dhash(image: np.ndarray) -> int:
    """64-bit difference hash of an (H, W) or (H, W, 3) uint8 image: the signs of the horizontal gradients of its
    9x8 area-averaged grey thumbnail (robust to gain, resizing and small crops)."""
    a = np.asarray(image)
    grey = a if a.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey.astype(np.float32), (9, 8), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def _find(parent: dict, x: str) -> str:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def negative_groups(samples: Sequence[Sample], hashes: Sequence[int] | None = None,
                    max_distance: int = HASH_MAX_DISTANCE) -> list[str]:
    """The group of each sample: its case merged with the cases of its near-duplicates. ``hashes`` (one per
    sample) default to :func:`image_dhash` of each image (read from disk). A group is named by its first case in
    sorted order."""
    samples = list(samples)
    if hashes is None:
        hashes = [image_dhash(read_image(s.image)) for s in samples]
    if len(hashes) != len(samples):
        raise ValueError(f"{len(hashes)} hashes for {len(samples)} samples")
    parent = {s.case: s.case for s in samples}
    h = np.asarray([int(x) for x in hashes], dtype=np.uint64)
    for i in range(len(samples)):  # one row of the distance matrix at a time (memory O(n))
        close = np.nonzero(np.bitwise_count(h[i + 1:] ^ h[i]) <= max_distance)[0] + i + 1
        for j in close:
            a, b = _find(parent, samples[i].case), _find(parent, samples[int(j)].case)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [_find(parent, s.case) for s in samples]


def split_negatives(samples: Sequence[Sample], fractions: Sequence[float], seed: int = 0,
                    groups: Sequence[str] | None = None) -> dict[str, list[Sample]]:
    """Deal lesion-free ``samples`` into ``{"train", "calibration", "test"}`` by group.

    ``fractions``: shares of the *groups* (train, calibration, test), summing to 1; calibration and test get
    ``round(f * n_groups)`` groups, at least one when their share is positive; train gets the rest. Groups are
    sorted, shuffled with ``numpy.random.default_rng(seed)`` and dealt in that order, so the result depends on
    the seed only; within a part the samples keep their input order. ``groups`` default to
    :func:`negative_groups`. A part with a positive share that would be empty raises :class:`DatasetError`.
    """
    samples = list(samples)
    fractions = parse_fractions(list(fractions))
    groups = list(groups) if groups is not None else negative_groups(samples)
    members: OrderedDict[str, list[int]] = OrderedDict()
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    assign: dict[str, str] = {}
    for g, idx in members.items():  # an image with its own split takes its whole group there
        given = [_FROM_SPLIT[samples[i].split] for i in idx if samples[i].split in _FROM_SPLIT]
        if given:
            assign[g] = sorted(given, key=NEGATIVE_PARTS.index)[-1]  # the most held-out part wins
    free = sorted(g for g in members if g not in assign)
    n = len(free)
    counts = [0, 0, 0]
    for k in (1, 2):
        if fractions[k] > 0 and n:
            counts[k] = max(1, int(round(fractions[k] * n)))
    counts[0] = n - counts[1] - counts[2]
    if counts[0] < 0 or (fractions[0] > 0 and counts[0] == 0 and n):
        raise DatasetError(f"--negative-split {','.join(f'{f:g}' for f in fractions)} cannot be dealt out: only {n} "
                           "group(s) of lesion-free images; add lesion-free images (more cases) or give train a "
                           "share of 0")
    order = np.random.default_rng(seed).permutation(n)
    start = 0
    for part, k in zip(NEGATIVE_PARTS, counts):
        for j in order[start:start + k]:
            assign[free[j]] = part
        start += k
    out: dict[str, list[Sample]] = {p: [] for p in NEGATIVE_PARTS}
    for s, g in zip(samples, groups):
        out[assign[g]].append(s)
    for part, f in zip(NEGATIVE_PARTS, fractions):
        if f > 0 and not out[part]:
            raise DatasetError(f"the {part} part of the lesion-free images would be empty ({len(members)} group(s)): "
                               "add lesion-free images or change --negative-split")
    return out


def part_counts(parts: dict[str, list[Sample]]) -> dict[str, dict]:
    """Per part: images, lesion-free images (of which crops of lesion images), their groups (cases) and lesion
    images, for the checkpoint's calibration note and the printed summary."""
    out = {}
    for name, samples in parts.items():
        neg = [s for s in samples if is_negative(s)]
        out[name] = {"images": len(samples), "negatives": len(neg),
                     "negative_crops": sum(1 for s in neg if s.source == CROP_SOURCE),
                     "negative_groups": len({s.case for s in neg}), "positives": len(samples) - len(neg)}
    return out

"""Segmentation metrics for TextSAM-EUS (numpy / scipy only).

* :func:`dice` - Dice similarity coefficient of two binary 2-D masks (:mod:`textsam_eus.model.mask_metrics`, with
  the masks checked to be 2-D; ``mask_iou`` / ``mask_dice`` are re-exported from there).
* :func:`surface_dice` - standard 2-D normalized surface distance (NSD,
  "surface Dice", Nikolov et al. 2021, as in DeepMind's ``surface-distance``).
* :func:`surface_dice_reference_convention` - the *non-standard* variant that
  the authors' reference implementation effectively computes (every
  foreground pixel counts as surface); only for comparison with the paper.
* :func:`summarize`, :func:`paired_ttest`, :func:`per_case_table` - reporting.
* :func:`roc_auc`, :func:`presence_at`, :func:`choose_threshold` - the tumour-presence decision, with 95%
  intervals: :func:`wilson_interval` for sensitivity/specificity, :func:`bootstrap_auc_interval` for the AUC.

Empty-mask convention for all overlap/surface metrics: both masks empty ->
1.0 (perfect agreement that there is no lesion); exactly one empty -> 0.0.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import lru_cache
from numbers import Real
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage, stats

from ..model.errors import OptionError
from ..model.mask_metrics import mask_dice, mask_iou  # noqa: F401 (re-exported)

__all__ = [
    "dice",
    "mask_dice",
    "mask_iou",
    "boundary",
    "surface_dice",
    "surface_dice_reference_convention",
    "summarize",
    "paired_ttest",
    "per_case_table",
    "roc_auc",
    "presence_at",
    "choose_threshold",
    "wilson_interval",
    "bootstrap_auc_interval",
]


def _as_binary_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred)
    g = np.asarray(gt)
    if p.ndim != 2 or g.ndim != 2:
        raise ValueError(f"expected 2-D masks, got shapes {p.shape} and {g.shape}")
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: pred {p.shape} vs gt {g.shape}")
    return p != 0, g != 0


def dice(pred, gt) -> float:
    """Dice = 2|P∩G| / (|P| + |G|) for binary 2-D masks (nonzero = foreground).

    Both empty -> 1.0; exactly one empty -> 0.0.
    """
    return mask_dice(*_as_binary_pair(pred, gt))


# 4-connected structuring element: a foreground pixel is a boundary pixel when
# at least one of its 4 neighbours is background (or lies outside the image).
_CROSS = ndimage.generate_binary_structure(2, 1)


def boundary(mask) -> np.ndarray:
    """Boundary (contour) pixels of a binary mask.

    A foreground pixel belongs to the boundary when one of its 4-neighbours is
    background; pixels on the image border count as boundary (the outside of
    the image is background).  The result is an 8-connected one-pixel-thick
    inner contour.
    """
    m = np.asarray(mask) != 0
    if not m.any():
        return np.zeros_like(m)
    inner = ndimage.binary_erosion(m, structure=_CROSS, border_value=0)
    return m & ~inner


def _nsd_from_sets(bp: np.ndarray, bg: np.ndarray, tol: float, spacing) -> float:
    """(|{b∈bp: d(b,bg)<=tol}| + |{b∈bg: d(b,bp)<=tol}|) / (|bp| + |bg|)."""
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    # distance of every pixel to the nearest element of each set
    dist_to_g = ndimage.distance_transform_edt(~bg, sampling=spacing)
    dist_to_p = ndimage.distance_transform_edt(~bp, sampling=spacing)
    ok_p = int(np.count_nonzero(dist_to_g[bp] <= tol))
    ok_g = int(np.count_nonzero(dist_to_p[bg] <= tol))
    return (ok_p + ok_g) / (n_p + n_g)


def _check_tol_spacing(tolerance_px, spacing):
    tol = float(tolerance_px)
    if not tol >= 0:
        raise OptionError(f"tolerance must be >= 0 (--tolerance, in pixels), got {tolerance_px!r}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 2 or any(s <= 0 for s in sp):
        raise ValueError(f"spacing must be two positive numbers (row, col), got {spacing!r}")
    return tol, sp


def surface_dice(pred, gt, tolerance_px: float = 3.0, spacing: Sequence[float] = (1.0, 1.0)) -> float:
    """Standard 2-D normalized surface distance (NSD / "surface Dice").

    Boundaries ∂P, ∂G are the contour pixels of each mask (:func:`boundary`).
    With ``d(x, S)`` the Euclidean distance from pixel ``x`` to the nearest
    pixel of set ``S`` (``scipy.ndimage.distance_transform_edt`` of the
    inverted boundary, in units of ``spacing`` = (row, col) pixel size)::

        NSD = (|{b ∈ ∂P : d(b, ∂G) <= tol}| + |{b ∈ ∂G : d(b, ∂P) <= tol}|)
              / (|∂P| + |∂G|)

    ``tolerance_px`` is in the units of ``spacing`` (pixels for the default
    spacing of 1).  Weighting: each boundary *pixel* has weight 1 (the
    ``surface-distance`` package weights boundary elements by their length;
    for smooth contours the two agree closely, pixel counting slightly
    over-weights diagonal runs).  Both masks empty -> 1.0; one empty -> 0.0.
    """
    p, g = _as_binary_pair(pred, gt)
    tol, sp = _check_tol_spacing(tolerance_px, spacing)
    return _nsd_from_sets(boundary(p), boundary(g), tol, sp)


def surface_dice_reference_convention(pred, gt, tolerance_px: float = 3.0) -> float:
    """NSD as effectively computed by the authors' reference implementation.

    NOT the standard NSD.  The reference code passed 2-D masks to a 3-D
    surface routine, so that every foreground pixel acts as a surface element.
    This function reproduces that convention: the formula of
    :func:`surface_dice` with ∂P := all foreground pixels of P and ∂G := all
    foreground pixels of G, i.e. the fraction of foreground pixels (of both
    masks) lying within ``tolerance_px`` of the other mask's foreground.
    Interior overlap therefore counts as "on the surface", which makes the
    score much more lenient than the standard NSD for large, overlapping
    lesions.  Use it only to compare with the paper's reported numbers; report
    :func:`surface_dice` as the NSD.  Both empty -> 1.0; one empty -> 0.0.
    """
    p, g = _as_binary_pair(pred, gt)
    tol, sp = _check_tol_spacing(tolerance_px, (1.0, 1.0))
    return _nsd_from_sets(p, g, tol, sp)


def summarize(values: Iterable[float]) -> dict:
    """``{"mean", "std", "n", "median"}`` of a list of numbers.

    ``std`` is the population standard deviation (``ddof=0``), i.e. the
    spread of the observed per-image/per-case scores, not an estimate for a
    larger population.  With no values, mean/std/median are NaN and n is 0.
    NaN inputs are not dropped (they propagate), so a failed metric is visible.
    """
    a = np.asarray(list(values), dtype=np.float64).ravel()
    if a.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "median": math.nan}
    return {
        "mean": float(np.mean(a)),
        "std": float(np.std(a, ddof=0)),
        "n": int(a.size),
        "median": float(np.median(a)),
    }


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two-sided paired t-test of ``a`` vs ``b`` (``scipy.stats.ttest_rel``).

    Returns ``{"t", "p", "n", "mean_diff"}`` with ``mean_diff = mean(a - b)``.
    Raises ``ValueError`` when the lengths differ or fewer than two pairs are
    given.  If all differences are equal, scipy yields ``t``/``p`` NaN (or
    infinite t), which is passed through.
    """
    x = np.asarray(list(a), dtype=np.float64).ravel()
    y = np.asarray(list(b), dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"paired t-test needs equally long samples, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError(f"paired t-test needs at least 2 pairs, got {x.size}")
    res = stats.ttest_rel(x, y, alternative="two-sided")
    return {
        "t": float(res.statistic),
        "p": float(res.pvalue),
        "n": int(x.size),
        "mean_diff": float(np.mean(x - y)),
    }


def _is_number(v) -> bool:
    return isinstance(v, (Real, np.number)) and not isinstance(v, (bool, np.bool_))


def per_case_table(records: Iterable[Mapping]) -> list[dict]:
    """Average per-image records per case.

    ``records``: dicts with a ``"case"`` key and numeric metric keys (e.g.
    ``dice``, ``nsd``); non-numeric values (paths, names) and booleans are
    ignored.  Returns one dict per case, in order of first appearance:
    ``{"case": ..., "n_images": k, <metric>: mean over that case's images}``
    (a metric missing from some records is averaged over those that have it).
    """
    groups: "OrderedDict[str, dict[str, list[float]]]" = OrderedDict()
    counts: dict[str, int] = {}
    for i, r in enumerate(records):
        if "case" not in r:
            raise ValueError(f"record {i} has no 'case' key: {dict(r)!r}")
        c = r["case"]
        g = groups.setdefault(c, OrderedDict())
        counts[c] = counts.get(c, 0) + 1
        for k, v in r.items():
            if k == "case" or not _is_number(v):
                continue
            g.setdefault(k, []).append(float(v))
    table = []
    for c, g in groups.items():
        row = {"case": c, "n_images": counts[c]}
        for k, vals in g.items():
            if k == "n_images":
                continue
            row[k] = float(np.mean(vals))
        table.append(row)
    return table


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (True = positive), ties counted half (Mann-Whitney);
    nan when one class is missing."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def presence_at(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> dict:
    """Sensitivity (positives scored >= threshold) and specificity (negatives below it), each with its Wilson 95%
    interval (``sensitivity_ci95``, ``specificity_ci95``: [low, high], NaN without images); a NaN score is below."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    tp, tn = int((pos >= threshold).sum()), int((neg < threshold).sum())
    return {"threshold": float(threshold),
            "sensitivity": tp / pos.size if pos.size else float("nan"),
            "specificity": tn / neg.size if neg.size else float("nan"),
            "n_positive": int(pos.size), "n_negative": int(neg.size),
            "sensitivity_ci95": list(wilson_interval(tp, int(pos.size))),
            "specificity_ci95": list(wilson_interval(tn, int(neg.size)))}


@lru_cache(maxsize=8)
def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (e.g. specificity: negatives below the threshold
    out of all negatives); ``(nan, nan)`` when ``n`` is 0. Unlike the normal approximation it stays inside [0, 1]
    and is not empty at 0 or n successes (0 of 25 false positives still allows up to 13%)."""
    if not 0 < confidence < 1:
        raise OptionError(f"confidence={confidence!r} is invalid: give a level in (0, 1), e.g. 0.95")
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))


def _weighted_aucs(s: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC (ties half) of each row of ``weights`` (B, n): image i counted ``weights[b, i]`` times; NaN for a row
    without a positive or a negative."""
    order = np.argsort(s, kind="stable")
    s, y, weights = s[order], y[order], weights[:, order]
    starts = np.concatenate([[0], np.nonzero(np.diff(s))[0] + 1])  # runs of equal scores
    pos = np.add.reduceat(weights * y, starts, axis=1)
    neg = np.add.reduceat(weights * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg), np.nan)


def bootstrap_auc_interval(scores: Sequence[float], labels: Sequence[bool], groups: Sequence | None = None,
                           n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`roc_auc`, from ``numpy.random.default_rng(seed)`` (the same
    inputs and seed give the same interval).

    Without ``groups`` the positives and the negatives are resampled separately (their counts stay fixed). With
    ``groups`` (e.g. each image's case) whole groups are resampled, so images of one patient move together and
    near-duplicates do not narrow the interval; a resample that lacks a class is left out. ``(nan, nan)`` when a
    class is missing. NaN scores are left out, as :func:`roc_auc` does."""
    if not 0 < confidence < 1:
        raise OptionError(f"confidence={confidence!r} is invalid: give a level in (0, 1), e.g. 0.95")
    if n_boot < 1:
        raise OptionError(f"n_boot={n_boot!r} is invalid: give a positive number of resamples, e.g. 2000")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if groups is not None and len(groups) != s.size:
        raise ValueError(f"{len(groups)} groups for {s.size} scores")
    ok = np.isfinite(s)
    g = None if groups is None else np.asarray([str(v) for v in groups], dtype=object)[ok]
    s, y = s[ok], y[ok]
    if y.all() or not y.any():
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, 256):  # (B, n) weights a chunk at a time
        b = min(256, n_boot - start)
        if g is None:
            w = np.zeros((b, s.size))
            for cls in (y, ~y):
                idx = np.nonzero(cls)[0]
                picks = idx[rng.integers(0, idx.size, (b, idx.size))]
                np.add.at(w, (np.repeat(np.arange(b), idx.size), picks.ravel()), 1.0)
        else:
            names, inverse = np.unique(g.astype(str), return_inverse=True)
            counts = np.zeros((b, names.size))
            np.add.at(counts, (np.repeat(np.arange(b), names.size),
                               rng.integers(0, names.size, (b, names.size)).ravel()), 1.0)
            w = counts[:, inverse]  # every image counted as often as its group was drawn
        values.append(_weighted_aucs(s, y, w))
    values = np.concatenate(values)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def _above_all(scores: np.ndarray) -> float:
    """A threshold just above every finite score: nothing reaches it."""
    top = float(np.max(scores)) if scores.size else 0.0
    return top + max(1e-3, 1e-3 * abs(top))


def choose_threshold(scores: Sequence[float], labels: Sequence[bool], min_specificity: float = 0.9) -> float:
    """The lowest threshold whose specificity is at least ``min_specificity`` (the most sensitive such
    threshold); the best Youden J when none reaches it.

    The candidates are the scores themselves and one above them all, on the scores' own scale: the presence score
    is the IoU head's raw output, which is not confined to [0, 1] (a model scoring every image below 0 still
    separates them, and a threshold clipped to 0 would show nothing)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    finite = s[np.isfinite(s)]
    candidates = np.unique(np.concatenate([finite, [_above_all(finite)]]))
    best_j, best_t = -np.inf, float(candidates[-1])
    for t in candidates:  # ascending: the first that is specific enough is the most sensitive one
        r = presence_at(s, y, t)
        if r["specificity"] >= min_specificity:
            return float(t)
        j = r["sensitivity"] + r["specificity"] - 1
        if j > best_j:
            best_j, best_t = j, float(t)
    return best_t

"""Calibrate the presence threshold on validation data and store it in the checkpoint.

The presence score is the IoU head's prediction on the text-only pass (see ``TextSamConfig.presence_threshold``):
a raw regression output, trained towards the mask IoU but not confined to [0, 1], so the threshold is chosen on the
scores' own scale (a model scoring every image below 0 still separates them). A validation set whose scores are
not finite, or beyond the threshold's bound, leaves presence off with the reason in the note.
After training, the best checkpoint scores every validation image; the threshold is the most sensitive one that
keeps at least ``min_specificity`` of the lesion-free validation images below it, in every group of negatives
(lesion-free images of the datasets, each negative video, phantom frames) separately, so one easy kind of negative
(phantom frames score about 0) cannot hide a hard one (a healthy pancreas). Frames of tumour-labelled validation
videos count as positives (for the AUC and the sensitivity). Without lesion-free validation
images nothing is calibrated and presence stays off.

Honest calibration (``train --negative-split``): the lesion-free images are split by group into train /
calibration / test (:mod:`textsam_eus.train.negative_split`); the threshold is fitted on the calibration part
(and the validation lesion images) only, and judged by ``eval`` on the test part, which it never saw. The parts'
sizes go into the result (``parts``) and its ``note``; :func:`few_negatives_warning` is the one line ``train``
prints (and logs) when fewer than :data:`MIN_CALIBRATION_NEGATIVES` negatives set the threshold.

The stream's hysteresis (show after k frames in a row at or above the threshold, hide after m below:
:class:`~textsam_eus.common.presence.PresenceGate`) is calibrated on the validation recordings (frames in order):
the smallest k, then m, that keeps every lesion-free recording's shown fraction at or below ``max_negative_shown``
while showing the most of the tumour recordings. Without validation recordings the defaults (3, 5) stay; without
tumour recordings nothing argues for showing sooner, so k is the default or the fewest above it that is feasible
(a single bright frame of a new healthy clip must not draw an outline) and m stays the default.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..common.presence import PresenceGate
from . import metrics

__all__ = ["presence_scores", "calibrate_presence", "calibrate_hysteresis", "few_negatives_warning",
           "MIN_CALIBRATION_NEGATIVES"]

DEFAULT_SHOW_FRAMES, DEFAULT_HIDE_FRAMES = 3, 5
#: fewer lesion-free calibration images than this leave the specificity too uncertain (0 false positives in 25
#: still allow 13%; in 100, 3.7%): ``train`` warns
MIN_CALIBRATION_NEGATIVES = 100


def few_negatives_warning(n_negative: int, n_groups: int | None = None,
                          minimum: int = MIN_CALIBRATION_NEGATIVES) -> str | None:
    """The one-line warning for a threshold set by fewer than ``minimum`` lesion-free images (None otherwise)."""
    if n_negative >= minimum:
        return None
    fix = ("add negatives: --data a manifest of lesion-free images (e.g. ultrasound_normal/manifest.csv) with "
           "--negative-split 0.6,0.2,0.2, --lesion-free-crops K, --calibration-negative-video CLIP (a healthy "
           "recording, cut to its sector)")
    if n_negative == 0:
        return f"no lesion-free image calibrates the presence threshold (presence stays off); {fix}"
    specificity_low = metrics.wilson_interval(n_negative, n_negative)[0]
    groups = f" in {n_groups} group(s)" if n_groups is not None else ""
    return (f"the presence threshold is calibrated on only {n_negative} lesion-free image(s){groups}, fewer than "
            f"{minimum}: even with no false positive among them the false-positive rate may be up to "
            f"{100 * (1 - specificity_low):.0f}% (95%); {fix}")


def presence_scores(model, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[list[float], list[bool]]:
    """(presence score, has a lesion) for each (image, mask) pair, as the engines compute it; a mask of None is a
    weak positive (a frame of a tumour-labelled video)."""
    from ..model.predictor import TextSamPredictor

    predictor = TextSamPredictor(model.eval())
    scores, labels = [], []
    for image, mask in pairs:
        r = predictor.segment(image, iterations=0)
        scores.append(float(r.presence))
        labels.append(mask is None or bool(np.asarray(mask).any()))
    return scores, labels


def calibrate_presence(model, val_pairs: Sequence, min_specificity: float = 0.9,
                       groups: Sequence[str] | None = None, parts: dict | None = None) -> dict:
    """Score ``val_pairs`` (the calibration set: never trained on); returns AUC, the chosen threshold and its
    sensitivity/specificity (with Wilson 95% intervals), overall and per group of negatives (threshold None when
    the set lacks negatives or positives). ``parts``: how the data were split (sizes and counts of each part,
    :func:`~textsam_eus.train.negative_split.part_counts`), kept in the result and summed up in its ``note``."""
    result = _calibrate(model, val_pairs, min_specificity, groups)
    if parts is not None:
        result["parts"] = parts
        cal, test = parts.get("calibration") or {}, parts.get("test") or {}
        if result.get("threshold") is None:
            pass
        elif cal.get("negatives"):
            result["note"] = (f"threshold fitted on {result['n_negative']} lesion-free and {result['n_positive']} "
                              f"lesion image(s), {cal['negatives']} of the negatives from the calibration part "
                              f"({cal.get('negative_groups', 0)} group(s)); judge it on the test part "
                              f"({test.get('negatives', 0)} lesion-free, {test.get('positives', 0)} lesion "
                              "image(s)) with eval --subset test and the same data and split flags")
        else:
            result["note"] = (f"threshold fitted on the validation split ({result['n_negative']} lesion-free, "
                              f"{result['n_positive']} lesion image(s)), which also chose the best epoch: its "
                              "specificity there is optimistic; split the negatives with --negative-split and judge "
                              "it with eval --subset test")
    return result


def _calibrate(model, val_pairs: Sequence, min_specificity: float, groups: Sequence[str] | None) -> dict:
    scores, labels = presence_scores(model, val_pairs)
    n_pos, n_neg = sum(labels), len(labels) - sum(labels)
    if n_pos == 0 or n_neg == 0:
        return {"threshold": None, "auc": None, "n_positive": n_pos, "n_negative": n_neg,
                "note": "presence not calibrated: the validation set needs images with and without lesions"}
    groups = list(groups) if groups is not None else ["all"] * len(scores)
    s, y, g = np.asarray(scores), np.asarray(labels), np.asarray(groups)
    why = _unusable(s)
    if why:
        return {"threshold": None, "auc": None, "n_positive": n_pos, "n_negative": n_neg,
                "note": f"presence not calibrated: {why}"}
    per_group = {}
    for name in sorted(set(g[~y])):
        pick = y | (g == name)  # the positives and this group's negatives
        per_group[name] = metrics.choose_threshold(s[pick], y[pick], min_specificity)
    t = max(per_group.values())
    result = {"auc": metrics.roc_auc(scores, labels), "min_specificity": min_specificity,
              **metrics.presence_at(scores, labels, t), "groups": {}}
    for name, t_g in per_group.items():
        neg = s[(g == name) & ~y]
        result["groups"][name] = {"n": int(neg.size), "own_threshold": t_g,
                                  "specificity": float((np.nan_to_num(neg, nan=-np.inf) < t).mean())}
    sequences = {name: (s[g == name].tolist(), bool(y[g == name].all()))
                 for name in sorted(set(g)) if name.startswith("video:")}
    result["hysteresis"] = calibrate_hysteresis(sequences, t)
    return result


def _unusable(s: np.ndarray) -> str | None:
    """Why these validation scores cannot set a threshold (None when they can)."""
    from ..core.config import PRESENCE_LIMIT

    bad = int((~np.isfinite(s)).sum())
    if bad:
        return (f"{bad} of {s.size} validation presence scores are NaN/Inf (the model's IoU head is not finite: "
                "check the training run)")
    if np.abs(s).max() > PRESENCE_LIMIT / 2:
        return (f"the validation presence scores reach {np.abs(s).max():.3g}, beyond the threshold's bound "
                f"{PRESENCE_LIMIT:g} (the IoU head diverged: check the training run)")
    return None


def _shown_fraction(scores: Sequence[float], threshold: float, show: int, hide: int) -> float:
    gate = PresenceGate(threshold, show, hide)
    for x in scores:
        gate.update(x)
    return gate.frames_shown / max(1, gate.frames)


def calibrate_hysteresis(sequences: dict[str, tuple[Sequence[float], bool]], threshold: float,
                         max_negative_shown: float = 0.05, show_range=range(1, 7), hide_range=range(1, 9)) -> dict:
    """Frame counts for the stream's hysteresis from validation recordings.

    ``sequences``: name -> (presence scores in frame order, the recording shows a tumour). Returns ``show_frames``,
    ``hide_frames``, the shown fraction of each recording with them, and how they were chosen.
    """
    neg = {k: v[0] for k, v in sequences.items() if not v[1]}
    pos = {k: v[0] for k, v in sequences.items() if v[1]}
    if not neg:
        return {"show_frames": DEFAULT_SHOW_FRAMES, "hide_frames": DEFAULT_HIDE_FRAMES,
                "note": "defaults: no lesion-free validation recordings"}
    if pos:
        shows, hides = list(show_range), list(hide_range)
    else:  # nothing to gain from showing sooner or hiding later: at least the default k, the default m
        shows, hides = [k for k in show_range if k >= DEFAULT_SHOW_FRAMES] or [max(show_range)], [DEFAULT_HIDE_FRAMES]
    best = None
    for k in shows:
        for m in hides:
            worst = max(_shown_fraction(v, threshold, k, m) for v in neg.values())
            gain = float(np.mean([_shown_fraction(v, threshold, k, m) for v in pos.values()])) if pos else 0.0
            feasible = worst <= max_negative_shown
            key = (feasible, gain if feasible else -worst, -k, -m)  # feasible first, then most shown, fewest frames
            if best is None or key > best[0]:
                best = (key, k, m)
    _, k, m = best
    return {"show_frames": k, "hide_frames": m, "max_negative_shown": max_negative_shown,
            "feasible": best[0][0],
            "shown": {name: round(_shown_fraction(v[0], threshold, k, m), 4) for name, v in sequences.items()},
            "note": "chosen on validation recordings" + ("" if pos else " (no tumour recordings: show_frames at "
                                                          "least the default, hide_frames the default)")}

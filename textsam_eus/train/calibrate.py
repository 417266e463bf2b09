"""Calibrate the presence threshold on validation data and store it in the checkpoint.

The presence score is the IoU head's prediction on the text-only pass (see ``TextSamConfig.presence_threshold``).
After training, the best checkpoint scores every validation image; the threshold is the most sensitive one that
keeps at least ``min_specificity`` of the lesion-free validation images below it, in every group of negatives
(lesion-free images of the datasets, each negative video, phantom frames) separately, so one easy kind of negative
(phantom frames score about 0) cannot hide a hard one (a healthy pancreas). Frames of tumour-labelled validation
videos count as positives (for the AUC and the sensitivity). Without lesion-free validation
images nothing is calibrated and presence stays off.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import metrics

__all__ = ["presence_scores", "calibrate_presence"]


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
                       groups: Sequence[str] | None = None) -> dict:
    """Score ``val_pairs``; returns AUC, the chosen threshold and its sensitivity/specificity, overall and per
    group of negatives (threshold None when the validation set lacks negatives or positives)."""
    scores, labels = presence_scores(model, val_pairs)
    n_pos, n_neg = sum(labels), len(labels) - sum(labels)
    if n_pos == 0 or n_neg == 0:
        return {"threshold": None, "auc": None, "n_positive": n_pos, "n_negative": n_neg,
                "note": "presence not calibrated: the validation set needs images with and without lesions"}
    groups = list(groups) if groups is not None else ["all"] * len(scores)
    s, y, g = np.asarray(scores), np.asarray(labels), np.asarray(groups)
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
    return result

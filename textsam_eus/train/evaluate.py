"""Evaluation: Dice and NSD (3 px) per image, mean ± std, per-case table; the paper's modes and baselines.

Modes
-----
``auto``            text prompt only (one decoder pass)
``auto+refine``     text prompt + ``iterations`` refinement passes with the mask's box + centroid (default 2)
``manual``          text prompt + the ground-truth centroid point and the tight box perturbed 10-15 px per side
``sam-box`` / ``sam-point``  zero-shot SAM/MedSAM (no LoRA, no text) with the GT box (perturbed) or centroid
``predictions``     masks made by any other method (nnU-Net, SAMUS, ...) read from a folder by image name
"""

from __future__ import annotations

import csv
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..model.errors import OptionError
from . import metrics
from .readers import DatasetError
from .outputs import atomic_write, atomic_write_text

MODES = ("auto", "auto+refine", "manual", "sam-box", "sam-point", "predictions")


@dataclass
class EvalItem:
    id: str
    case: str
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) {0, 1}


def perturbed_box(mask: np.ndarray, rng: np.random.Generator, lo: float = 10, hi: float = 15) -> np.ndarray | None:
    """The GT's tight box with each side moved by a random 10-15 px in a random direction, clipped to the image."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
    box += rng.uniform(lo, hi, 4) * rng.choice([-1.0, 1.0], 4)
    h, w = mask.shape
    box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
    return np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])], np.float32)


def centroid(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return None if ys.size == 0 else np.array([[xs.mean(), ys.mean()]], np.float32)


def make_predict_fn(mode: str, predictor=None, iterations: int = 2, seed: int = 0,
                    predictions_dir: str | Path | None = None) -> Callable[[EvalItem], tuple[np.ndarray, float]]:
    """A function item -> (predicted mask (H, W) bool, predicted IoU or nan) for ``mode``."""
    if mode not in MODES:
        raise OptionError(f"mode={mode!r} is invalid: choose one of {MODES}")
    if mode == "predictions":
        if predictions_dir is None:
            raise OptionError("mode 'predictions' needs --predictions DIR")
        folder = Path(predictions_dir)
        if not folder.is_dir():
            raise DatasetError(f"predictions folder not found: {folder}")
        files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff", ".bmp")}

        def from_folder(item: EvalItem):
            from .readers import read_mask

            stem = Path(item.id).stem
            if stem not in files:
                raise DatasetError(f"no predicted mask for {item.id} in {folder} (expected {stem}.png)")
            pred = read_mask(files[stem]).astype(bool)
            if pred.shape != item.mask.shape:
                raise DatasetError(f"{files[stem]} is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                                   f"{item.mask.shape[1]}x{item.mask.shape[0]}")
            return pred, float("nan")
        return from_folder
    if predictor is None:
        raise ValueError(f"mode {mode!r} needs a model")

    def predict(item: EvalItem):
        rng = np.random.default_rng([seed, zlib.crc32(item.id.encode())])
        if mode == "auto":
            r = predictor.segment(item.image, iterations=0)
        elif mode == "auto+refine":
            r = predictor.segment(item.image, iterations=iterations)
        elif mode in ("manual", "sam-box", "sam-point"):
            box = perturbed_box(item.mask, rng) if mode in ("manual", "sam-box") else None
            pts = centroid(item.mask) if mode in ("manual", "sam-point") else None
            if box is None and pts is None:  # no lesion: no manual prompt to give
                if mode == "manual":
                    r = predictor.segment(item.image, iterations=0)
                else:
                    return np.zeros(item.mask.shape, bool), float("nan")
            else:
                r = predictor.segment(item.image, iterations=0, points=pts, box=box)
        return r.mask, r.iou, getattr(r, "presence", None)
    return predict


def mask_digest(mask: np.ndarray) -> str:
    """A short hash of a binary ground-truth mask (its size and its lesion pixels): which GT an image was scored
    against, so ``compare`` can refuse to pair evaluations of different ground truth."""
    m = np.ascontiguousarray(np.asarray(mask) > 0)
    h = hashlib.sha256(f"{m.shape[0]}x{m.shape[1]}:".encode())
    h.update(np.packbits(m).tobytes())
    return h.hexdigest()[:16]


def ground_truth_digest(records: list[dict]) -> str:
    """One hash of every (image id, GT mask hash) pair of an evaluation, in id order."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r["id"]):
        h.update(f"{r['id']}\t{r.get('gt_sha256')}\n".encode())
    return h.hexdigest()[:16]


def evaluate(items: Iterable[EvalItem], predict_fn, tolerance_px: float = 3.0, progress: bool = False) -> list[dict]:
    records = []
    items = list(items) if progress else items
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="eval", leave=False)
    for item in items:
        out = predict_fn(item)
        pred, iou = out[0], out[1]
        presence = out[2] if len(out) > 2 else None
        gt = item.mask > 0
        records.append({"id": item.id, "case": item.case,
                        "dice": metrics.dice(pred, gt),
                        "nsd": metrics.surface_dice(pred, gt, tolerance_px),
                        "nsd_reference_convention": metrics.surface_dice_reference_convention(pred, gt, tolerance_px),
                        "iou_pred": iou, "presence": float("nan") if presence is None else float(presence),
                        "gt_empty": not gt.any(), "pred_empty": not pred.any(), "gt_sha256": mask_digest(gt)})
    return records


def summarize(records: list[dict], presence_threshold: float | None = None, **meta) -> dict:
    """Dice/NSD over every image (as the paper reports), Dice/NSD over the images with a lesion, and tumour
    presence: with both kinds of image the AUC of the presence score with its bootstrap 95% interval
    (``presence_auc_ci95``: whole cases resampled, seeded, so it is the same every run) and, at the threshold,
    sensitivity/specificity with Wilson 95% intervals (``dice_positive_gated``: Dice on lesion images with the
    outline removed where presence is below it); on lesion-free images alone, the specificity and its interval."""
    out = dict(meta)
    out["n"] = len(records)
    out["ground_truth"] = {"n_images": len(records), "n_cases": len({r["case"] for r in records}),
                           "sha256": ground_truth_digest(records)}
    for key in ("dice", "nsd", "nsd_reference_convention"):
        out[key] = metrics.summarize([r[key] for r in records])
    pos = [r for r in records if not r["gt_empty"]]
    out["n_positive"], out["n_negative"] = len(pos), len(records) - len(pos)
    scores = [r["presence"] for r in records]
    labels = [not r["gt_empty"] for r in records]
    if pos and len(pos) < len(records):
        out["dice_positive"] = metrics.summarize([r["dice"] for r in pos])
        out["nsd_positive"] = metrics.summarize([r["nsd"] for r in pos])
        out["presence_auc"] = metrics.roc_auc(scores, labels)
        out["presence_auc_ci95"] = list(metrics.bootstrap_auc_interval(scores, labels,
                                                                       groups=[r["case"] for r in records]))
        if presence_threshold is not None:
            out["presence"] = metrics.presence_at(scores, labels, presence_threshold)
            out["dice_positive_gated"] = metrics.summarize(
                [r["dice"] if np.nan_to_num(r["presence"], nan=-1) >= presence_threshold else 0.0 for r in pos])
    elif not pos and records and presence_threshold is not None:
        out["presence"] = metrics.presence_at(scores, labels, presence_threshold)
    out["per_case"] = metrics.per_case_table([{k: v for k, v in r.items() if k in ("case", "dice", "nsd")}
                                              for r in records])
    out["per_image"] = records
    return out


def write_results(result: dict, json_path: str | Path | None, csv_path: str | Path | None = None) -> None:
    """Write the JSON and/or per-image CSV, each whole (a temporary file renamed into place)."""
    if json_path:
        atomic_write_text(json_path, json.dumps(result, indent=2, default=float))
    if csv_path:
        rows = result["per_image"]
        with atomic_write(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id"])
            w.writeheader()
            w.writerows(rows)


def format_summary(result: dict) -> str:
    def pm(key):
        s = result[key]
        return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"
    text = (f"{result.get('mode', '')}: n={result['n']}  Dice {pm('dice')}  NSD@{result.get('tolerance_px', 3)}px "
            f"{pm('nsd')}  (reference-convention NSD {pm('nsd_reference_convention')})")
    if "dice_positive" in result:
        text += (f"\n  lesion images n={result['n_positive']}: Dice {pm('dice_positive')}, NSD {pm('nsd_positive')}; "
                 f"lesion-free n={result['n_negative']}; presence AUC {result['presence_auc']:.3f}")
        ci = result.get("presence_auc_ci95")
        if ci:
            text += f" [{ci[0]:.3f}, {ci[1]:.3f}] (95% intervals in brackets)"
    if "presence" in result:
        p = result["presence"]
        text += f"\n  presence at {p['threshold']:.3f}: "
        if p["n_positive"]:
            text += f"sensitivity {_rate(p, 'sensitivity')}, "
        text += (f"specificity {_rate(p, 'specificity')} of {p['n_negative']} lesion-free "
                 f"({p['n_negative'] - round(p['specificity'] * p['n_negative'])} shown as tumour)")
        if "dice_positive_gated" in result:
            text += f"; Dice on lesion images with presence gating {pm('dice_positive_gated')}"
    return text


def _rate(p: dict, key: str) -> str:
    """``93.0% [87.1, 96.4]``: a rate with its 95% interval (when the result has one)."""
    ci = p.get(f"{key}_ci95")
    band = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
    return f"{100 * p[key]:.1f}%{band}"


def compare(a: dict, b: dict) -> dict:
    """Paired two-sided t-test on per-image Dice and NSD of two evaluations of the same images.

    Images are paired by id. Raises DatasetError when paired images were scored against different ground truth
    (their GT mask hashes differ); ``warnings`` lists what makes the comparison weaker (images in one evaluation
    only, evaluations without GT hashes, different NSD tolerances).
    """
    ra = {r["id"]: r for r in a["per_image"]}
    rb = {r["id"]: r for r in b["per_image"]}
    common = sorted(set(ra) & set(rb))
    if len(common) < 2:
        raise DatasetError(f"the two evaluations share {len(common)} images; a paired test needs the same images "
                           "(evaluate both methods on the same data and split)")
    differ = [i for i in common if ra[i].get("gt_sha256") and rb[i].get("gt_sha256")
              and ra[i]["gt_sha256"] != rb[i]["gt_sha256"]]
    if differ:
        raise DatasetError(f"the two evaluations scored {len(differ)} of their {len(common)} shared images against "
                           f"different ground-truth masks (e.g. {differ[0]}): evaluate both on the same data (the "
                           "same --data, --split, --phantom and --seed)")
    out = {"n": len(common), "only_in_a": len(set(ra) - set(rb)), "only_in_b": len(set(rb) - set(ra))}
    unchecked = sum(1 for i in common if not (ra[i].get("gt_sha256") and rb[i].get("gt_sha256")))
    out["ground_truth_checked"] = unchecked == 0
    warnings = []
    if out["only_in_a"] or out["only_in_b"]:
        warnings.append(f"the evaluations cover different images ({out['only_in_a']} only in A, {out['only_in_b']} "
                        f"only in B): the paired test uses the {len(common)} shared ones; evaluate both on the same "
                        "data and --subset to compare them all")
    if unchecked:
        warnings.append(f"{unchecked} of the {len(common)} paired images have no ground-truth hash in one of the "
                        "files (written by an older textsam-eus), so that both were scored against the same masks "
                        "is not checked; evaluate again to check it")
    if a.get("tolerance_px") != b.get("tolerance_px"):
        warnings.append(f"the NSD tolerances differ (A {a.get('tolerance_px')} px, B {b.get('tolerance_px')} px): "
                        "the NSD difference mixes method and tolerance")
    out["warnings"] = warnings
    for key in ("dice", "nsd"):
        out[key] = metrics.paired_ttest([ra[i][key] for i in common], [rb[i][key] for i in common])
    return out

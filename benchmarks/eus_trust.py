"""Trust on real EUS screens: how often a tumour is shown, where the outline lies, and what it costs.

Measures the targets of the trust issue with a checkpoint (default: the shipped demo model) as ``textsam-eus
stream`` runs (its :class:`~textsam_eus.runs.RunSettings`: engine, pipeline configuration; ``VideoFileSource``,
``StreamPipeline``), with ``--workers 1 --no-report --masks none --no-video`` (nothing is written but counted):

* every clip in ``--clips`` (default ``../shared/data/eus_clips``; ``healthy*`` clips have no tumour in any frame,
  ``cancer*`` clips are cancer examinations): frames shown with a tumour, and mask pixels outside the imaging
  sector, with the default options (``--roi auto``, presence gating) and, for comparison, the old behaviour
  (``--roi none``, every outline shown);
* held-out images: the part of ``--data``'s split the checkpoint never trained on (its recorded split: the test
  part of ``--test-fraction``/``--negative-split``, else, for older checkpoints, the validation part of
  ``--val-fraction 0.15``; ``--split-as CKPT`` or the split flags score two checkpoints on the same images):
  lesion-free images and lesion-free crops of lesion images shown, and on the lesion images Dice and 2-D NSD@3px
  (auto mode) and the sensitivity of the presence decision, proportions with Wilson 95% intervals, and how many of
  them the checkpoint trained on (by its recorded split);
* each clip's role for the checkpoint (trained on, validation, calibration, held out), from its record;
* the demo's frame rate with onnxruntime.

Writes ``results.json`` and ``results.md`` to ``--out`` (default ``benchmarks/results/eus-trust/``) and prints the table.

    python benchmarks/eus_trust.py [--checkpoint demo] [--threads 2] [--split-as CKPT | --test-fraction F ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from textsam_eus.stream.sinks import Sink

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


class _ClipStats(Sink):
    """Counts frames shown and mask pixels outside the imaging sector (found by its own
    :class:`LayoutTracker` on the frames it is given, the same for every option) and on black screen pixels."""

    def __init__(self) -> None:
        from textsam_eus.common.screen import LayoutTracker

        self.reference = LayoutTracker()
        self.frames = self.shown = 0
        self.mask_px = self.outside_px = self.black_px = 0
        self.scores: list[float] = []  # the presence score of every frame the model saw

    def write(self, record) -> None:
        import cv2

        self.frames += 1
        score = getattr(record.result, "presence", None)
        if score is not None:
            self.scores.append(float(score))
        sector = self.reference.update(record.image)
        m = record.mask > 0
        if not m.any():
            return
        self.shown += 1
        self.mask_px += int(m.sum())
        self.outside_px += int(m.sum()) if sector is None else int((m & (sector.mask == 0)).sum())
        gray = cv2.cvtColor(record.image, cv2.COLOR_RGB2GRAY)
        self.black_px += int((m & (gray <= 6)).sum())

    def result(self) -> dict[str, Any]:
        return {"frames": self.frames, "shown": self.shown, "shown_fraction": self.shown / max(1, self.frames),
                "outside_sector_fraction": self.outside_px / self.mask_px if self.mask_px else 0.0,
                "on_black_fraction": self.black_px / self.mask_px if self.mask_px else 0.0,
                "presence_scores": [round(x, 4) for x in self.scores]}


def clip_run(engine, clip: Path, roi: str | None, presence: bool, settings=None) -> dict[str, Any]:
    """``stream --source CLIP --roi ROI [--no-presence]`` with ``settings`` (the run's
    :class:`~textsam_eus.runs.RunSettings`; default: the CLI's), counted, not written. ``roi`` None: the whole
    frame (``--roi none``)."""
    from textsam_eus.runs.settings import RunSettings
    from textsam_eus.stream.pipeline import StreamPipeline
    from textsam_eus.stream.sources import VideoFileSource

    stats = _ClipStats()
    run = (settings or RunSettings()).replace(roi="none" if roi is None else roi, no_presence=not presence, masks="none", no_video=True, no_report=True,
                           workers="1")
    with tempfile.TemporaryDirectory() as tmp, VideoFileSource(clip) as src:
        cfg = run.for_job(str(clip), Path(tmp) / "o").to_pipeline_config(src, handle_signals=False)
        summary = StreamPipeline(engine, src, Path(tmp) / "o", cfg, extra_sinks=[stats]).run()
    out = stats.result()
    out["layout"] = (summary.get("layout") or {}).get("current")
    out["fps"] = summary["fps"]
    return out


def training_data(extra: dict[str, Any]) -> list[str]:
    """The ``--data`` list a checkpoint was trained with (recorded in its metadata ``extra``), found again under
    ../shared/data."""
    found = []
    for d in extra.get("data") or []:
        p = Path(d)
        if not p.exists():  # trained on another machine: the same file under this checkout's shared data
            p = SHARED / p.parent.name / p.name
        if p.exists():
            found.append(str(p))
    return found


def _split_defaults() -> dict[str, Any]:
    """``train``'s defaults of the split flags a checkpoint records (``RECORDED_SPLIT_KEYS``), for one that records
    none: read from ``train``'s own parser, in the order of its ``--help``."""
    from textsam_eus.commands.train import add_arguments
    from textsam_eus.train.splits import RECORDED_SPLIT_KEYS

    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    return {k: v for k, v in vars(p.parse_args(["--out", "-"])).items() if k in RECORDED_SPLIT_KEYS}


_SPLIT_DEFAULTS = _split_defaults()


def split_flags(extra: dict[str, Any], given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The split the image figures come from: the flags ``given`` (not None), else the checkpoint's record, else
    ``train``'s defaults; ``part`` is ``test`` when the split has one (``--test-fraction`` or ``--negative-split``),
    else ``val`` (an older checkpoint: its validation images)."""
    out = {**_SPLIT_DEFAULTS, **{k: extra[k] for k in _SPLIT_DEFAULTS if extra.get(k) is not None}}
    out.update({k: v for k, v in (given or {}).items() if v is not None})
    out["part"] = "test" if out["test_fraction"] > 0 or out["negative_split"] is not None else "val"
    return out


def _split(data: list[str], flags: dict[str, Any]) -> dict[str, list]:
    from textsam_eus.train.splits import split_samples

    return split_samples(data, "auto", flags["val_fraction"], flags["test_fraction"], flags["split_seed"],
                         negative_split=flags["negative_split"], lesion_free_crops=flags["lesion_free_crops"])


def held_out_samples(data: list[str], flags: dict[str, Any]) -> list:
    """The samples of the held-out part of ``data``'s split, each image (or crop window) once."""
    return list({(s.image, s.crop): s for s in _split(data, flags)[flags["part"]]}.values())


def seen_images(extra: dict[str, Any]) -> set[str]:
    """The image files a checkpoint trained on (its recorded split's train part; a crop counts as its image; its
    validation images only picked the epoch). The runs it was initialised from (``init``) are not recorded, so this
    is a lower bound for a fine-tuned checkpoint."""
    data = training_data(extra)
    if not data:
        return set()
    flags = {**split_flags(extra), "lesion_free_crops": 0}  # crops of train images add no image file
    return {str(Path(s.image).resolve()) for s in _split(data, flags)["train"]}


def _share(k: int, n: int) -> dict[str, Any]:
    from textsam_eus.train.metrics import wilson_interval

    lo, hi = wilson_interval(k, n)
    return {"n": n, "shown": k, "fraction": k / n if n else float("nan"), "ci95": [lo, hi]}


def image_runs(engine, threshold, samples, seen: set[str] = frozenset()) -> dict[str, Any]:
    """Lesion-free images shown (whole lesion-free images and lesion-free crops of lesion images apart) and, on the
    lesion images, Dice, 2-D NSD@3px (auto mode) and the sensitivity of the presence decision, each with a 95%
    interval where it is a proportion (Wilson); ``seen``: how many of them the checkpoint trained on."""
    from textsam_eus.train import metrics
    from textsam_eus.train.negative_split import CROP_SOURCE
    from textsam_eus.train.readers import load_pair

    negatives: dict[str, list[tuple[bool, bool]]] = {"images": [], "crops": []}  # (shown, seen) of each
    dice, nsd, gated, found = [], [], [], []
    lesions_seen = 0
    for s in samples:
        image, mask = load_pair(s)
        r = engine.segment(image, iterations=0)
        on = threshold is None or (r.presence is not None and r.presence >= threshold)
        was_seen = str(Path(s.image).resolve()) in seen
        if not mask.any():
            negatives["crops" if s.source == CROP_SOURCE else "images"].append((bool(on and r.mask.any()), was_seen))
            continue
        lesions_seen += was_seen
        d = metrics.dice(r.mask, mask > 0)
        dice.append(d)
        nsd.append(metrics.surface_dice(r.mask, mask > 0, 3.0))
        found.append(on)
        gated.append(d if on else 0.0)
    negatives["all"] = negatives["images"] + negatives["crops"]
    out: dict[str, Any] = {}
    for kind, rows in negatives.items():
        if rows:
            out[f"lesion_free_{kind}"] = {**_share(sum(sh for sh, _ in rows), len(rows)),
                                          "seen": sum(se for _, se in rows)}
    if dice:
        out["lesion"] = {"images": len(dice), "seen": lesions_seen, "dice": float(np.mean(dice)),
                         "nsd": float(np.mean(nsd)), "dice_with_presence": float(np.mean(gated)),
                         "sensitivity": float(np.mean(found)),
                         "sensitivity_ci95": list(metrics.wilson_interval(sum(found), len(found)))}
    return out


def clip_roles(extra: dict[str, Any]) -> dict[str, str]:
    """What each recording the checkpoint records did (``RECORDED_VIDEOS``): trained on, validation, calibration,
    held out."""
    from textsam_eus.train.video_labels import RECORDED_VIDEOS

    roles = {}
    for key, role in RECORDED_VIDEOS.items():
        for v in extra.get(key) or []:
            roles.setdefault(Path(v).stem, role)
    return roles


def demo_fps(checkpoint: str, threads: int) -> float | None:
    from textsam_eus.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        cli(["demo", "--checkpoint", checkpoint, "--out", str(out), "--no-progress", "--threads", str(threads)])
        return json.loads((out / "summary.json").read_text())["fps"]


def clip_aucs(clips: dict[str, Any]) -> dict[str, float]:
    """Frame-level presence AUC of each cancer clip against each healthy clip (default options)."""
    from textsam_eus.train.metrics import roc_auc

    out = {}
    for c, crow in clips.items():
        for h, hrow in clips.items():
            if c.startswith("cancer") and h.startswith("healthy"):
                pos, neg = crow["default"]["presence_scores"], hrow["default"]["presence_scores"]
                if pos and neg:
                    out[f"{c} vs {h}"] = round(float(roc_auc(pos + neg, [True] * len(pos) + [False] * len(neg))), 3)
    return out


def _pct(share: dict[str, Any]) -> str:
    lo, hi = share["ci95"]
    return f"{share['shown']}/{share['n']} ({100 * share['fraction']:.1f}%, 95% CI {100 * lo:.1f}-{100 * hi:.1f}%)"


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [f"# EUS trust ({meta['checkpoint']}, presence threshold {meta['threshold']})", "",
             "| clip | role for this checkpoint | frames | shown (default) | outside sector | on black "
             "| shown (old: whole frame, no presence) | outside sector (old) | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in data["clips"].items():
        new, old = row["default"], row["old"]
        target = "shown <= 5%" if name.startswith("healthy") else "shown >= 50%"
        lines.append(f"| {name} | {row['role']} | {new['frames']} | {_pct(new['shown_share'])} | "
                     f"{100 * new['outside_sector_fraction']:.2f}% | {100 * new['on_black_fraction']:.2f}% | "
                     f"{100 * old['shown_fraction']:.0f}% | {100 * old['outside_sector_fraction']:.1f}% | {target} |")
    lines += ["", "Frame intervals treat frames as independent; neighbouring frames are not, so they are too narrow."]
    if data.get("clip_auc"):
        lines += ["", "Frame-level presence AUC: " + ", ".join(f"{k} {v:.3f}" for k, v in data["clip_auc"].items())]
    img, flags = data["images"], meta["split"]
    split = ", ".join(f"--{k.replace('_', '-')} {flags[k]}" for k in _SPLIT_DEFAULTS)
    lines += ["", f"Images: the {flags['part']} part of `{split}` over {', '.join(Path(d).parent.name for d in img['data'])}"
              f" (seen = in the train part of this checkpoint's recorded split)", ""]
    for key, label in (("lesion_free_images", "lesion-free images shown"),
                       ("lesion_free_crops", "lesion-free crops of lesion images shown"),
                       ("lesion_free_all", "all lesion-free test images shown")):
        if key in img:
            lines.append(f"- {label}: {_pct(img[key])}, seen {img[key]['seen']} (target <= 10%)")
    if "lesion" in img:
        le = img["lesion"]
        lo, hi = le["sensitivity_ci95"]
        lines.append(f"- lesion images ({le['images']}, seen {le['seen']}), auto mode: Dice {100 * le['dice']:.2f}% "
                     f"(target >= 78%), 2-D NSD@3px {100 * le['nsd']:.2f}% (target >= 25%), with the presence "
                     f"decision Dice {100 * le['dice_with_presence']:.2f}%, sensitivity {100 * le['sensitivity']:.1f}% "
                     f"(95% CI {100 * lo:.1f}-{100 * hi:.1f}%)")
    if data.get("demo_fps") is not None:
        lines.append(f"- `textsam-eus demo` with onnxruntime: {data['demo_fps']:.1f} fps (target >= 20)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="demo")
    p.add_argument("--engine", default="onnxruntime")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clips", default=str(SHARED / "eus_clips"))
    p.add_argument("--data", action="append", default=None,
                   help="image datasets (default: the checkpoint's own --data list, found under ../shared/data)")
    split = p.add_argument_group("the held-out images (default: the checkpoint's recorded split)")
    split.add_argument("--split-as", metavar="CKPT", help="take the split of another checkpoint (its record and "
                       "--data), to score two checkpoints on the same held-out images")
    split.add_argument("--val-fraction", type=float)
    split.add_argument("--test-fraction", type=float)
    split.add_argument("--split-seed", type=int)
    split.add_argument("--negative-split")
    split.add_argument("--lesion-free-crops", type=int)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "eus-trust"))
    p.add_argument("--no-demo", action="store_true", help="skip the demo frame rate")
    args = p.parse_args(argv)
    clips = sorted(Path(args.clips).glob("*.mp4"))
    if not clips:
        print(f"no clips in {args.clips}: nothing to measure (the shared data is not here)")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    from textsam_eus.model.checkpoint import read_checkpoint_meta
    from textsam_eus.runs import RunSettings

    extra = read_checkpoint_meta(args.checkpoint)["extra"]  # the record only; the engine builds the model
    split_extra = read_checkpoint_meta(args.split_as)["extra"] if args.split_as else extra
    flags = split_flags(split_extra, {k: getattr(args, k) for k in _SPLIT_DEFAULTS})
    settings = RunSettings(engine=args.engine, checkpoint=args.checkpoint, device="cpu", threads=args.threads)
    engine = settings.open_engine(quiet=True)  # onnxruntime: the checkpoint's export, made in the cache once
    threshold = engine.presence["threshold"]
    t0 = time.perf_counter()
    data: dict[str, Any] = {"meta": {"checkpoint": args.checkpoint, "engine": engine.info(), "threshold": threshold,
                                     "split": flags, "split_as": args.split_as,
                                     "command": "python benchmarks/eus_trust.py " + " ".join(argv or sys.argv[1:])},
                            "clips": {}}
    roles = clip_roles(extra)
    for clip in clips:
        row = {"role": roles.get(clip.stem, "held out"), "default": clip_run(engine, clip, "auto", True, settings),
               "old": clip_run(engine, clip, "none", False, settings)}
        row["default"]["shown_share"] = _share(row["default"]["shown"], row["default"]["frames"])
        data["clips"][clip.stem] = row
        brief = {k: v for k, v in row["default"].items() if k != "presence_scores"}
        print(f"{clip.stem} ({row['role']}): {brief}", flush=True)
    data["clip_auc"] = clip_aucs(data["clips"])
    image_data = args.data or training_data(split_extra) or [str(SHARED / "ultrasound_lesions" / "manifest.csv"),
                                                             str(SHARED / "ultrasound_normal" / "manifest.csv")]
    image_data = list(dict.fromkeys(image_data))  # a manifest listed several times (to weigh more) scores once
    data["images"] = {"data": image_data, **image_runs(engine, threshold, held_out_samples(image_data, flags),
                                                       seen_images(extra))}
    if not args.no_demo:
        data["demo_fps"] = demo_fps(args.checkpoint, args.threads)
    data["meta"]["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str))
    md = markdown(data)
    (out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

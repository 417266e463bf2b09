"""Trust on real EUS screens: how often a tumour is shown, where the outline lies, and what it costs.

Measures the targets of the trust issue with a checkpoint (default: the shipped demo model) as ``textsam-eus
stream`` runs (its :class:`~textsam_eus.runs.RunSettings`: engine, pipeline configuration; ``VideoFileSource``,
``StreamPipeline``), with ``--workers 1 --no-report --masks none --no-video`` (nothing is written but counted):

* every clip in ``--clips`` (default ``../shared/data/eus_clips``; ``healthy*`` clips have no tumour in any frame,
  ``cancer*`` clips are cancer examinations): frames shown with a tumour, and mask pixels outside the imaging
  sector, with the default options (``--roi auto``, presence gating) and, for comparison, the old behaviour
  (``--roi none``, every outline shown);
* the lesion-free validation images (``ultrasound_normal``): images shown with a tumour;
* the lesion validation images (``ultrasound_lesions``): Dice (auto mode), without and with the presence decision;
  both from ``train``'s split of the ``--data`` list recorded in the checkpoint, so no image it was trained on;
* the demo's frame rate with onnxruntime.

Splits are the ones ``train`` makes with ``--val-fraction 0.15 --split-seed 0``. Writes ``results.json`` and
``results.md`` to ``--out`` (default ``benchmarks/results/eus-trust/``) and prints the table.

    python benchmarks/eus_trust.py [--checkpoint demo] [--threads 2]
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


def _val_split(data: list[str]):
    """The validation images of ``train``'s split of ``data`` (--val-fraction 0.15, --split-seed 0), each once."""
    from textsam_eus.train.readers import SegmentationDataset
    from textsam_eus.train.splits import split_samples

    samples = list({s.image: s for s in split_samples(data, "auto", 0.15, 0.0, 0)["val"]}.values())
    return SegmentationDataset(samples)


def image_runs(engine, threshold, data: list[str]) -> dict[str, Any]:
    """Lesion-free validation images shown, and Dice on the lesion validation images, on the checkpoint's own
    validation split (images it was not trained on)."""
    from textsam_eus.train import metrics

    shown, dice, gated, scores = [], [], [], []
    for image, mask in _val_split(data):
        r = engine.segment(image, iterations=0)
        on = threshold is None or (r.presence is not None and r.presence >= threshold)
        if not mask.any():
            shown.append(bool(on and r.mask.any()))
            continue
        d = metrics.dice(r.mask, mask > 0)
        dice.append(d)
        scores.append(on)
        gated.append(d if on else 0.0)
    out: dict[str, Any] = {"data": data}
    if shown:
        out["normal_val"] = {"images": len(shown), "shown": int(sum(shown)), "shown_fraction": float(np.mean(shown))}
    if dice:
        out["lesion_val"] = {"images": len(dice), "dice": float(np.mean(dice)),
                             "dice_with_presence": float(np.mean(gated)), "sensitivity": float(np.mean(scores))}
    return out


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


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# EUS trust ({data['meta']['checkpoint']}, presence threshold {data['meta']['threshold']})", "",
             "| clip | frames | shown (default) | outside sector | on black | shown (old: whole frame, no presence) "
             "| outside sector (old) | target |", "|---|---|---|---|---|---|---|---|"]
    for name, row in data["clips"].items():
        new, old = row["default"], row["old"]
        target = "shown <= 10%" if name.startswith("healthy") else "shown >= 50%"
        lines.append(f"| {name} | {new['frames']} | {100 * new['shown_fraction']:.0f}% | "
                     f"{100 * new['outside_sector_fraction']:.2f}% | {100 * new['on_black_fraction']:.2f}% | "
                     f"{100 * old['shown_fraction']:.0f}% | {100 * old['outside_sector_fraction']:.1f}% | {target} |")
    if data.get("clip_auc"):
        lines += ["", "Frame-level presence AUC: " + ", ".join(f"{k} {v:.3f}" for k, v in data["clip_auc"].items())]
    trained = data["meta"].get("trained_on_clips")
    if trained:
        lines += ["", f"Recordings this checkpoint was trained on (not held out): {', '.join(trained)}"]
    img = data["images"]
    if "normal_val" in img:
        n = img["normal_val"]
        lines += ["", f"- lesion-free validation images: shown {n['shown']}/{n['images']} "
                      f"({100 * n['shown_fraction']:.1f}%; target <= 10%)"]
    if "lesion_val" in img:
        le = img["lesion_val"]
        lines.append(f"- lesion validation images (auto mode): Dice {100 * le['dice']:.2f}% "
                     f"(target >= 73%), with the presence decision {100 * le['dice_with_presence']:.2f}%, "
                     f"sensitivity {100 * le['sensitivity']:.1f}%")
    if data.get("demo_fps") is not None:
        lines.append(f"- `textsam-eus demo` with onnxruntime: {data['demo_fps']:.1f} fps (target >= 20)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="demo")
    p.add_argument("--engine", default="onnxruntime")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clips", default=str(SHARED / "eus_clips"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "eus-trust"))
    p.add_argument("--no-demo", action="store_true", help="skip the demo frame rate")
    args = p.parse_args(argv)
    clips = sorted(Path(args.clips).glob("*.mp4"))
    if not clips:
        print(f"no clips in {args.clips}: nothing to measure (the shared data is not here)")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    from textsam_eus.runs import RunSettings

    settings = RunSettings(engine=args.engine, checkpoint=args.checkpoint, device="cpu", threads=args.threads)
    engine = settings.open_engine(quiet=True)  # onnxruntime: the checkpoint's export, made in the cache once
    threshold = engine.presence["threshold"]
    t0 = time.perf_counter()
    data: dict[str, Any] = {"meta": {"checkpoint": args.checkpoint, "engine": engine.info(), "threshold": threshold,
                                     "command": "python benchmarks/eus_trust.py " + " ".join(argv or sys.argv[1:])},
                            "clips": {}}
    for clip in clips:
        data["clips"][clip.stem] = {"default": clip_run(engine, clip, "auto", True, settings),
                                    "old": clip_run(engine, clip, "none", False, settings)}
        brief = {k: v for k, v in data["clips"][clip.stem]["default"].items() if k != "presence_scores"}
        print(f"{clip.stem}: {brief}", flush=True)
    data["clip_auc"] = clip_aucs(data["clips"])
    from textsam_eus.model.checkpoint import load_checkpoint

    extra = load_checkpoint(args.checkpoint)[1]
    data["meta"]["trained_on_clips"] = sorted(set(extra.get("negative_video") or []) |
                                              set(extra.get("positive_video") or []))
    val_data = training_data(extra) or [str(SHARED / "ultrasound_lesions" / "manifest.csv"),
                                                  str(SHARED / "ultrasound_normal" / "manifest.csv")]
    data["images"] = image_runs(engine, threshold, val_data)
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

"""``textsam-eus demo``: the shipped demo model on a synthetic EUS clip; no arguments, no downloads."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..core.errors import OptionError
from ..runs.settings import ENGINE_FIELDS, STYLE_FIELDS, RunSettings
from ._args import add_engine_arguments, add_style_arguments
from ._stream_run import print_summary, run_one


def add_arguments(p: argparse.ArgumentParser) -> None:
    clip = p.add_argument_group("the synthetic clip")
    outputs = p.add_argument_group("outputs")
    clip.add_argument("--frames", type=int, default=90, help="frames of the synthetic clip (default: %(default)s)")
    clip.add_argument("--size", default="480x360", help="frame size WxH of the synthetic clip (default: %(default)s)")
    clip.add_argument("--seed", type=int, default=0, help="the clip's random seed (default: %(default)s)")
    outputs.add_argument("--out", default="textsam_demo", help="output folder (default: ./textsam_demo)")
    outputs.add_argument("--overwrite", action="store_true", help="replace what --out holds (an earlier demo's "
                         "output is replaced without it)")
    outputs.add_argument("--no-progress", action="store_true", help="no progress bar on the console")
    add_engine_arguments(p.add_argument_group("model and engine"))
    add_style_arguments(p.add_argument_group("overlay style"))


def _earlier_demo(out: Path) -> bool:
    """True when ``out`` holds the output of an earlier demo run (a phantom source), which the demo replaces."""
    import json

    try:
        return str(json.loads((out / "summary.json").read_text()).get("source", "")).startswith("phantom:")
    except (OSError, ValueError, AttributeError):
        return False


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    from ..common.phantom import PhantomClip, PhantomConfig
    from ..core.mask_metrics import mask_dice
    from ..stream.sources import PhantomSource

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise OptionError(f"--size {args.size!r} is invalid: use WxH, e.g. 480x360") from None
    from ..stream.outdir import check_out_dir

    settings = demo_settings(args)
    check_out_dir(args.out, overwrite=settings.overwrite)
    engine = settings.open_engine(quiet=False)
    out = Path(args.out)
    if settings.overwrite and not args.overwrite:
        print(f"replacing the earlier demo output in {out}")
    source = PhantomSource(n_frames=args.frames, seed=args.seed, width=width, height=height, fps=15.0)
    with source:
        job = settings.replace(width=width, height=height).for_job(f"phantom:{args.frames}", out)
        cfg = job.to_pipeline_config(source, workers=1)  # its settings: `stream` repeats the demo (seed 0)
        summary = run_one(engine, source, out, cfg, not args.no_progress)
    print_summary(summary, out)
    # the clip is synthetic, so its exact masks are known: score what was written
    import cv2

    clip = PhantomClip(args.frames, seed=args.seed, config=PhantomConfig(height=height, width=width), fps=15.0)
    dices = []
    for i in range(summary["frames_out"]):
        pred = cv2.imread(str(out / "masks" / f"mask_{i:06d}.png"), cv2.IMREAD_GRAYSCALE)
        if pred is None:
            continue
        dices.append(mask_dice(pred, clip[i][1]))
    if dices:
        print(f"  Dice against the phantom's exact masks: {np.mean(dices):.3f} (mean over {len(dices)} frames)")
    print(f"  wrote {written_outputs(out)}")
    return 0


def demo_settings(args: argparse.Namespace) -> RunSettings:
    """The demo as a ``stream`` run: the engine and style options, the whole frame (``--roi none``: the clip has
    no screen around its sector), one segment worker, and ``--overwrite`` also over an earlier demo's output."""
    options = {k: getattr(args, k) for k in ENGINE_FIELDS + STYLE_FIELDS}
    return RunSettings(**options, roi="none", workers="1", no_progress=args.no_progress, out=args.out,
                       overwrite=args.overwrite or _earlier_demo(Path(args.out)))


def written_outputs(out: Path) -> str:
    """The files and folders the run left in ``out``, as one comma list (read from the folder, so it is true)."""
    paths = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    return ", ".join(f"{p}/" if p.is_dir() else str(p) for p in paths)  # a folder keeps its slash

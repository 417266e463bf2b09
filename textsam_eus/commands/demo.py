"""``textsam-eus demo``: the shipped demo model on a synthetic EUS clip; no arguments, no downloads."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .stream import add_engine_arguments, add_style_arguments, print_summary, run_one, style_from


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="textsam_demo", help="output folder (default: ./textsam_demo)")
    p.add_argument("--frames", type=int, default=90, help="frames of the synthetic clip")
    p.add_argument("--size", default="480x360", help="frame size WxH of the synthetic clip")
    p.add_argument("--seed", type=int, default=0)
    add_engine_arguments(p)
    add_style_arguments(p)
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    from ..common.phantom import PhantomClip, PhantomConfig
    from ..stream.pipeline import PipelineConfig
    from ..stream.sources import PhantomSource
    from ._engine import make_engine

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {args.size!r} is invalid: use WxH, e.g. 480x360") from None
    engine = make_engine(args.engine, args.checkpoint, args.bundle, args.device, args.precision, args.cuda_graphs,
                         args.iterations, args.refine_prompts)
    out = Path(args.out)
    source = PhantomSource(n_frames=args.frames, seed=args.seed, width=width, height=height, fps=15.0)
    with source:
        summary = run_one(engine, source, out, PipelineConfig(style=style_from(args)), not args.no_progress)
    print_summary(summary, out)
    # the clip is synthetic, so its exact masks are known: score what was written
    import cv2

    clip = PhantomClip(args.frames, seed=args.seed, config=PhantomConfig(height=height, width=width), fps=15.0)
    dices = []
    for i in range(summary["frames_out"]):
        pred = cv2.imread(str(out / "masks" / f"mask_{i:06d}.png"), cv2.IMREAD_GRAYSCALE)
        if pred is None:
            continue
        gt = clip[i][1] > 0
        p = pred > 0
        denom = p.sum() + gt.sum()
        dices.append(1.0 if denom == 0 else 2 * np.logical_and(p, gt).sum() / denom)
    if dices:
        print(f"  Dice against the phantom's exact masks: {np.mean(dices):.3f} (mean over {len(dices)} frames)")
    print(f"  wrote {out / 'overlay.mp4'}, {out / 'masks'}/, {out / 'latency.json'}, {out / 'summary.json'}")
    return 0

"""``textsam-eus annotate``: every recording of an archive (a folder or a CSV list) through the file pipeline of
``stream``, on Ray workers, resumable; one folder per examination and one table over the archive."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ._args import (add_engine_arguments, add_file_pipeline_arguments, add_style_arguments,
                    check_file_pipeline_arguments)
from ._stream_run import load_engine, parse_roi_option, pipeline_config, roi_for_source

# the options that shape what is written: a rerun into the same --out must give the same ones (runs never mix);
# the model itself is compared by its hash, so --checkpoint/--bundle are not in this list
OUTPUT_SETTINGS = ("engine", "device", "precision", "attention", "cuda_graphs", "iterations", "refine_prompts",
                   "resize", "roi", "temporal", "masks", "deidentify", "no_report", "no_video", "fps", "max_frames",
                   "no_presence", "presence_threshold", "show_after", "hide_after", "fill_color", "contour_color",
                   "alpha", "no_hud")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True,
                   help="the archive: a folder of recordings (searched recursively: videos by extension, DICOM by "
                        "content) or a CSV list with a 'source' column of file paths (optional 'id' column: the "
                        "examination's folder name)")
    p.add_argument("--out", required=True,
                   help="output folder: one folder per examination, archive.csv/.json/.html; give the --out of an "
                        "earlier run to resume it (finished examinations with unchanged inputs are skipped)")
    p.add_argument("--workers", type=int, default=1,
                   help="model workers (Ray actors), each with one engine (default 1)")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: start a local Ray "
                        "instance, loopback only, for this run)")
    p.add_argument("--threads-per-worker", type=int, default=None,
                   help="CPU threads (Ray CPUs) per worker (default: --threads, else this machine's cores / --workers)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (default 0; 0.5 shares one)")
    p.add_argument("--retries", type=int, default=2,
                   help="times a file is tried again when its worker process dies (killed, out of memory) before "
                        "it is marked failed (default 2)")
    add_engine_arguments(p)
    add_file_pipeline_arguments(p)
    add_style_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress line on the console")


class ArchiveSettings:
    """What every worker does with a file, from the command's options (picklable: sent to the Ray workers).
    The same wiring as ``stream --source FILE`` (:mod:`._stream_run`), with ``overwrite`` (an examination is always
    annotated from scratch) and no signal handlers (the driver handles Ctrl-C)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.options = {k: v for k, v in vars(args).items() if not k.startswith("_")}

    @property
    def args(self) -> argparse.Namespace:
        return argparse.Namespace(**self.options)

    def load_engine(self, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        return load_engine(self.args, threads, quiet=True)

    def open_source(self, path: str):
        from ..stream.sources import open_source

        return open_source(path, fps=self.options.get("fps"))

    def pipeline_config(self, source, workers: int, model: dict):
        args = self.args
        roi_arg, roi = parse_roi_option(args.roi)
        cfg = pipeline_config(args, roi_for_source(roi_arg, roi, source), workers, overwrite=True,
                              handle_signals=False)
        cfg.model = model
        return cfg


def _check_args(args: argparse.Namespace) -> None:
    from ..stream.sinks.registry import parse_mask_formats

    check_file_pipeline_arguments(args)
    parse_roi_option(args.roi)
    parse_mask_formats(args.masks)


def _prepare_bundle(args: argparse.Namespace) -> None:
    """onnxruntime without --bundle runs the checkpoint's cached ONNX export: make it once here, not in every worker
    at the same time."""
    if args.bundle or args.engine not in ("auto", "onnxruntime"):
        return
    from ..engines import fastest_engine
    from ._engine import bundle_for

    if args.engine == "onnxruntime" or fastest_engine(None) == "onnxruntime":
        bundle_for(args.checkpoint, fp16=args.precision == "fp16")


def plan_threads(args: argparse.Namespace) -> tuple[int, int]:
    """(CPU threads per worker, frames segmented in parallel inside a worker): on a CPU a worker with 2+ threads
    segments two frames at a time with half its threads each, as ``stream`` does with the machine's cores."""
    threads = args.threads_per_worker or args.threads or max(1, (os.cpu_count() or 1) // max(1, args.workers))
    on_cpu = args.gpus_per_worker == 0 and (args.device in (None, "cpu"))
    frame_workers = 2 if (on_cpu and not args.temporal and threads >= 2) else 1
    return threads, frame_workers


def run(args: argparse.Namespace) -> int:
    from ..archive.plan import ArchiveError, plan_archive
    from ..archive.runner import RayOptions, run_archive
    from ..archive.table import ArchiveTable
    from ..core.errors import UnavailableError
    from ..core.imports import RAY_HINT, is_ray_available

    _check_args(args)
    threads, frame_workers = plan_threads(args)
    opts = RayOptions(workers=args.workers, address=args.address, threads=threads, gpus=args.gpus_per_worker,
                      retries=args.retries, frame_workers=frame_workers)
    if not is_ray_available():  # before anything is written (ray itself is imported by the runner, which sets it up)
        raise UnavailableError(RAY_HINT)
    exams = plan_archive(args.source, args.out)
    if not exams:
        raise ArchiveError(f"--source {args.source} holds no files; give a folder of recordings or a CSV list of them")
    settings: dict[str, Any] = {k: getattr(args, k) for k in OUTPUT_SETTINGS}
    table = ArchiveTable.open(args.out, settings)
    try:
        for exam in exams:
            table.add(exam)
        table.carry_over()
        if any(e.problem is None for e in exams):
            _prepare_bundle(args)
            rc = run_archive(table, exams, ArchiveSettings(args), opts, progress=not args.no_progress)
        else:
            table.write()
            rc = 1
    finally:
        table.close()
    _print_summary(table, Path(args.out))
    return rc


def _print_summary(table, out: Path) -> None:
    counts = table.counts()
    n = sum(counts.values())
    parts = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    run = table.run
    took = f" in {run['wall_s']:.1f} s (Ray start {run.get('ray_start_s', 0):.1f} s)" if run.get("wall_s") else ""
    print(f"{out}: {n} examinations: {parts}{took}; table: {out / 'archive.csv'}, {out / 'archive.html'}")
    bad = [r for r in table.rows.values() if r["status"] in ("failed", "incomplete")]
    for r in bad[:10]:
        print(f"  {r['status']}: {r['source']}: {r['reason']}")
    if len(bad) > 10:
        print(f"  ... and {len(bad) - 10} more (see archive.csv)")
    sys.stdout.flush()

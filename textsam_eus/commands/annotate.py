"""``textsam-eus annotate``: every recording of an archive (a folder or a CSV list) through the file pipeline of
``stream``, on Ray workers, resumable; one folder per examination and one table over the archive."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..runs.settings import ENGINE_FIELDS, FILE_PIPELINE_FIELDS, STYLE_FIELDS, RunSettings
from ._args import add_engine_arguments, add_file_pipeline_arguments, add_style_arguments

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


def file_settings(args: argparse.Namespace) -> RunSettings:
    """What every worker does with a file (picklable: sent to the Ray workers): ``stream --source FILE`` with the
    command's engine, file-pipeline and style options, and ``--overwrite`` (an examination is always annotated
    from scratch). Every value is checked here, before any work."""
    return RunSettings(**{k: getattr(args, k) for k in ENGINE_FIELDS + FILE_PIPELINE_FIELDS + STYLE_FIELDS},
                       overwrite=True)


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

    per_file = file_settings(args)
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
            per_file.export_to_cache()  # once here, not in every worker at the same time
            rc = run_archive(table, exams, per_file, opts, progress=not args.no_progress)
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

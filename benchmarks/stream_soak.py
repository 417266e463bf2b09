#!/usr/bin/env python
"""Streaming targets of TextSAM-EUS on the CPU: realtime latency, a long soak, and file-mode throughput.

    python benchmarks/stream_soak.py                       # the measurement (~2 min on an idle 2-core CPU)
    python benchmarks/stream_soak.py --quick --out /tmp/soak-smoke   # a smoke run (~30 s)

The shipped demo model (``--checkpoint demo``), engine ``onnxruntime`` by default, opened and run as the CLI does
(:class:`~textsam_eus.runs.RunSettings`: ``stream``'s defaults, recorded in ``results.json``); ``--threads``
(default 2) goes to ``torch.set_num_threads`` and to the engine (onnxruntime intra-op threads). The frames are the
real clip (``../shared/data/eus_clips/cancer_v1.mp4``: 800x600, 15 fps, 50 frames, H.264) cropped with the
``eus800x600`` ROI.

1. *Long recording*: the clip's packets remuxed end to end (no re-encode: pts/dts shifted by one clip length per
   loop) into ``long.mp4`` in a work folder, whole loops up to at least ``--frames`` frames.
2. *Realtime latency*: ``StreamPipeline`` on ``RealtimeReplay(VideoFileSource(long.mp4), speed)`` at
   ``--speeds`` (default 2 and 4) for ``--latency-frames`` frames, overlay video + PNG masks + report.html
   (``stream --realtime --speed S``'s outputs). Target:
   p99 capture-to-overlay latency <= 2 frame periods (``1 / (fps * speed)``) + the run's model time (p50
   ``engine_total``).
3. *Soak*: the realtime replay at ``--soak-speed`` (4) over ``--frames`` frames; VmRSS sampled from the
   pipeline's progress callback. Target: RSS growth from the baseline (after ``--rss-baseline-after`` processed
   frames) to the last frame < ``--rss-limit-mb`` (50) MB, and frames dropped > 0 (the live path dropped).
4. *File-mode throughput*: file mode (every frame, no realtime) over ``--throughput-frames`` frames of the long
   recording, all outputs on: frames_out / wall, against the model-only rate (``engine.segment`` on the same
   ROI-cropped frames, one at a time, after warm-up: ``benchmarks/run.py``'s model mode). Target: ratio >= 0.95.

Writes ``results.json`` and ``results.md`` to ``--out`` (default ``benchmarks/results/stream-soak/``) and prints
the tables. Exit status 0 when every measurement ran (whether or not the targets pass), 1 on an error, 2 on bad
arguments, 130 when interrupted; a missing clip is a skip (message, status 0, nothing written).

The pieces are in the ``benchmarks`` package: ``recording`` (the long recording), ``rss`` (the VmRSS sampler),
``soak_runs`` (the engine, the pipeline runs, the three measurements), ``soak_report`` (results.json, results.md),
and the shared ``machine``, ``frames``, ``modes``; this file is the command line. Run it by path
(``python benchmarks/stream_soak.py``) or as ``python -m benchmarks.stream_soak``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

if not __package__:  # run by path: the benchmarks package from this checkout (not its modules as top-level names)
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from benchmarks.frames import DEFAULT_CLIP, load_frames  # noqa: E402
from benchmarks.machine import busy_load, loadavg, machine_info, torch_threads  # noqa: E402
from benchmarks.recording import build_long_recording  # noqa: E402
from benchmarks.soak_report import markdown, save  # noqa: E402
from benchmarks.soak_runs import build_engine, measure_latency, measure_soak, measure_throughput  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "stream-soak"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/stream_soak.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default=str(DEFAULT_CLIP), help="the clip to loop (default %(default)s)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (default %(default)s)")
    p.add_argument("--work", default=None, help="work folder for long.mp4 and the run outputs (default: a temporary "
                                                "folder, removed at the end)")
    p.add_argument("--keep-work", action="store_true", help="keep the work folder and every run's outputs")
    p.add_argument("--checkpoint", default="demo")
    p.add_argument("--engine", default="onnxruntime", help="torch, onnxruntime (default) or auto")
    p.add_argument("--bundle", default=None, help="deployment bundle (onnxruntime)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads, and the engine's threads where "
                                                          "it takes them (onnxruntime; default 2)")
    p.add_argument("--frames", type=int, default=None, help="soak frames = frames of the long recording "
                                                            "(default 3000; --quick 150)")
    p.add_argument("--latency-frames", type=int, default=None, help="frames per latency run (default 600; --quick 120)")
    p.add_argument("--throughput-frames", type=int, default=None,
                   help="frames of the file-mode and model-only runs (default 300; --quick 100)")
    p.add_argument("--workers", type=int, default=2,
                   help="file mode: segment workers, each with threads/workers threads, as `textsam-eus stream "
                        "--workers auto` on a 2-core CPU (default 2; 1 = one frame at a time with all threads)")
    p.add_argument("--speeds", default="2,4", help="realtime speeds of the latency runs (default 2,4)")
    p.add_argument("--soak-speed", type=float, default=4.0)
    p.add_argument("--warmup", type=int, default=5, help="model-only warm-up frames, excluded (default 5)")
    p.add_argument("--rss-baseline-after", type=int, default=None,
                   help="processed frames before the soak's RSS baseline (default 300, at most a fifth of --frames)")
    p.add_argument("--rss-every", type=int, default=10, help="sample VmRSS every N processed frames (default 10)")
    p.add_argument("--rss-limit-mb", type=float, default=50.0)
    p.add_argument("--min-ratio", type=float, default=0.95, help="file-mode / model-only rate target (0.95)")
    p.add_argument("--only", default="throughput,latency,soak",
                   help="comma list of the measurements to run, in this order: throughput,latency,soak")
    p.add_argument("--quick", action="store_true", help="a smoke run: 150 soak frames, 120 latency frames, 100 "
                                                        "throughput frames")
    return p


def _positive(parser, name: str, v) -> None:
    if v is not None and v <= 0:
        parser.error(f"--{name} {v} is invalid: use a positive number")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames is None:
        args.frames = 150 if args.quick else 3000
    if args.latency_frames is None:
        args.latency_frames = 120 if args.quick else 600
    if args.throughput_frames is None:
        args.throughput_frames = 100 if args.quick else 300
    if args.rss_baseline_after is None:
        args.rss_baseline_after = min(300, max(1, args.frames // 5))
    try:
        speeds = [float(s) for s in args.speeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--speeds {args.speeds!r}: expected a comma list of numbers")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in only:
        if s not in ("throughput", "latency", "soak"):
            parser.error(f"--only: unknown measurement {s!r} (throughput, latency, soak)")
    for name in ("frames", "latency_frames", "throughput_frames", "threads", "soak_speed", "rss_every",
                 "rss_limit_mb", "rss_baseline_after"):
        _positive(parser, name.replace("_", "-"), getattr(args, name))
    for s in speeds:
        _positive(parser, "speeds", s)
    if args.warmup < 1 or args.warmup >= args.throughput_frames:
        parser.error(f"--warmup {args.warmup}: use 1 .. --throughput-frames - 1")

    clip = Path(args.clip)
    if not clip.is_file():
        print(f"stream_soak: skipped: the clip {clip} is missing (pass --clip PATH to an 800x600 EUS recording); "
              "nothing was measured or written")
        return 0

    with torch_threads(args.threads):
        return _run(args, clip, speeds, only)


def _run(args: argparse.Namespace, clip: Path, speeds: list[float], only: list[str]) -> int:
    from textsam_eus.runs import RunSettings
    from textsam_eus.stream.roi import ROI

    started = _dt.datetime.now()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="textsam-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    roi = ROI.preset("eus800x600")
    data: dict[str, Any] = {"meta": {"started": started.isoformat(timespec="seconds"),
                                     "command": " ".join(["python benchmarks/stream_soak.py"] + (
                                         sys.argv[1:] if Path(sys.argv[0]).name == "stream_soak.py"
                                         else ["(in-process)"])),
                                     "args": dict(vars(args)), "speeds": speeds, "roi": str(roi),
                                     "quick": bool(args.quick)},
                            "notes": [], "rows": []}
    rc = 0
    try:
        machine = machine_info(args.threads)
        data["meta"]["machine"] = machine
        load = busy_load(machine)
        if load is not None:
            data["notes"].append(f"the CPU was busy at the start (1-min load average {load:.2f} on "
                                 f"{machine.get('logical_cpus')} logical CPUs): latencies and rates are pessimistic")
        if args.quick:
            data["notes"].append("--quick: a smoke run with few frames; not a measurement")
        need = max([args.frames if "soak" in only else 0, args.latency_frames if "latency" in only else 0,
                    args.throughput_frames if "throughput" in only else 0, 1])
        long_mp4 = work / "long.mp4"
        data["meta"]["recording"] = build_long_recording(clip, long_mp4, need)
        rec = data["meta"]["recording"]
        print(f"stream soak -> {out}\n  recording: {rec['frames']} frames ({rec['loops']} x {clip.name}, remuxed) "
              f"in {long_mp4}", flush=True)
        if not roi.fits(*rec["size"]):
            raise RuntimeError(f"{clip} is {rec['size'][0]}x{rec['size'][1]}: the eus800x600 ROI {roi} does not fit")
        fps = rec["fps"] or 15.0
        settings = RunSettings(engine=args.engine, checkpoint=args.checkpoint, bundle=args.bundle, device="cpu",
                               threads=args.threads, roi=str(roi))  # stream's defaults for the rest
        data["meta"]["settings"] = settings.to_dict()
        engine, einfo = build_engine(settings)
        data["meta"]["engine"] = einfo
        warm, _ = load_frames(str(clip), args.warmup, 0)  # not measured: every run starts warm
        for f in warm:
            engine.segment(f)
        print(f"  engine: {einfo['info']}, iterations {einfo['iterations']}, threads {einfo['threads']}", flush=True)
        for n in data["notes"]:
            print("NOTE: " + n, flush=True)
        save(out, data)
        try:
            for what in only:
                jobs = []
                if what == "throughput":
                    jobs.append(("file_throughput", lambda: measure_throughput(
                        engine, settings, long_mp4, clip, work, args.throughput_frames, args.warmup, args.min_ratio,
                        args.keep_work, args.workers)))
                elif what == "latency":
                    for s in speeds:
                        jobs.append(("realtime_latency", lambda s=s: measure_latency(
                            engine, settings, long_mp4, work, s, args.latency_frames, fps, args.keep_work)))
                else:
                    jobs.append(("soak", lambda: measure_soak(
                        engine, settings, long_mp4, work, args.soak_speed, args.frames, args.rss_baseline_after,
                        args.rss_limit_mb, args.rss_every, args.keep_work)))
                for name, job in jobs:
                    print(f"- {name} ...", flush=True)
                    try:
                        row = job()
                    except Exception as exc:  # noqa: BLE001 - recorded; the other measurements still run
                        rc = 1
                        row = {"measurement": name, "result": "ERROR", "error": f"{type(exc).__name__}: {exc}",
                               "traceback": traceback.format_exc(limit=8)}
                        print(f"  ERROR: {row['error']}", file=sys.stderr, flush=True)
                    data["rows"].append(row)
                    save(out, data)
                    if row.get("result") != "ERROR":
                        print(f"  {row['result']} ({row['seconds']} s)", flush=True)
                    if (row.get("summary") or {}).get("interrupted_by"):
                        data["notes"].append(f"interrupted by {row['summary']['interrupted_by']}: later "
                                             "measurements were not run")
                        return 130
        finally:
            engine.close()
    except Exception as exc:  # noqa: BLE001 - setup failed: nothing could be measured
        data["notes"].append(f"error: {type(exc).__name__}: {exc}")
        data["error"] = traceback.format_exc(limit=8)
        print(f"stream_soak: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        rc = 1
    finally:
        data["meta"]["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        data["meta"]["loadavg_at_end"] = loadavg()
        data["meta"]["wall_s"] = round((_dt.datetime.now() - started).total_seconds(), 2)
        save(out, data)
        if "machine" in data["meta"] and "engine" in data["meta"] and "recording" in data["meta"]:
            text = markdown(data)
            (out / "results.md").write_text(text)
            print()
            print(text)
        if not args.keep_work and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    verdicts = [r.get("result") for r in data["rows"]]
    print(f"{sum(v == 'PASS' for v in verdicts)} PASS, {sum(v == 'FAIL' for v in verdicts)} FAIL, "
          f"{sum(v == 'ERROR' for v in verdicts)} ERROR; wrote {out}/results.json and results.md")
    return rc


if __name__ == "__main__":
    sys.exit(main())

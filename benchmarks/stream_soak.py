#!/usr/bin/env python
"""Streaming targets of TextSAM-EUS on the CPU: realtime latency, a long soak, and file-mode throughput.

    python benchmarks/stream_soak.py                       # the measurement (~2 min on an idle 2-core CPU)
    python benchmarks/stream_soak.py --quick --out /tmp/soak-smoke   # a smoke run (~30 s)

The shipped demo model (``--checkpoint demo``), engine ``onnxruntime`` by default, built with
``commands._engine.make_engine`` as the CLI does; ``--threads`` (default 2) goes to ``torch.set_num_threads``
and to the engine (onnxruntime intra-op threads). The frames are the real clip
(``../shared/data/eus_clips/cancer_v1.mp4``: 800x600, 15 fps, 50 frames, H.264) cropped with the
``eus800x600`` ROI.

1. *Long recording*: the clip's packets remuxed end to end (no re-encode: pts/dts shifted by one clip length per
   loop) into ``long.mp4`` in a work folder, whole loops up to at least ``--frames`` frames.
2. *Realtime latency*: ``StreamPipeline`` on ``RealtimeReplay(VideoFileSource(long.mp4), speed)`` at
   ``--speeds`` (default 2 and 4) for ``--latency-frames`` frames, overlay video + PNG masks. Target:
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

Shared pieces (machine info, memory, the clip's frames, the model-only measurement) come from the ``benchmarks``
package; run this file by path (``python benchmarks/stream_soak.py``) or as ``python -m benchmarks.stream_soak``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import math
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if not __package__:  # run by path: the benchmarks package from this checkout (not its modules as top-level names)
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from benchmarks.frames import DEFAULT_CLIP, load_frames  # noqa: E402
from benchmarks.machine import (busy_load, loadavg, machine_info, proc_status, reset_peak_rss, rss_mb,  # noqa: E402
                                torch_threads)
from benchmarks.modes import run_model_mode  # noqa: E402
from benchmarks.timing import MeasuredEngine  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "stream-soak"


# ============================================================================================ long recording
def build_long_recording(clip: Path, dest: Path, min_frames: int) -> dict[str, Any]:
    """Remux ``clip``'s video packets end to end into ``dest`` (no re-encode) until it has >= ``min_frames``
    frames, in whole loops of the clip (every loop starts on the clip's first keyframe, so each decodes alone)."""
    import av

    with av.open(str(clip)) as src:
        stream = src.streams.video[0]
        packets = [p for p in src.demux(stream) if p.dts is not None and p.size > 0]  # drop the flush packet
        if not packets:
            raise RuntimeError(f"{clip}: no video packets")
        if not packets[0].is_keyframe:
            raise RuntimeError(f"{clip}: the first packet is not a keyframe; the clip cannot be looped by remuxing")
        durations = [p.duration for p in packets if p.duration]
        step = int(round(sum(durations) / len(durations))) if durations else 1
        first = min(p.pts for p in packets if p.pts is not None)
        span = max((p.pts or 0) + (p.duration or step) for p in packets) - first  # one loop, in stream ticks
        time_base = stream.time_base
        per_loop = len(packets)
        loops = max(1, math.ceil(min_frames / per_loop))
        t = time.perf_counter()
        with av.open(str(dest), mode="w") as out:
            ostream = out.add_stream_from_template(stream)
            for k in range(loops):
                shift = k * span
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts = None if p.pts is None else p.pts + shift
                    q.dts = p.dts + shift
                    q.duration = p.duration
                    q.is_keyframe = p.is_keyframe
                    q.time_base = time_base
                    q.stream = ostream
                    out.mux(q)
        info = {"path": str(dest), "source_clip": str(clip), "loops": loops, "frames": loops * per_loop,
                "frames_per_loop": per_loop, "codec": stream.codec_context.name, "size": [stream.width, stream.height],
                "fps": float(stream.average_rate) if stream.average_rate else None,
                "bytes": dest.stat().st_size, "seconds_to_build": round(time.perf_counter() - t, 3)}
    return info


# ============================================================================================ memory
class RssSampler:
    """The pipeline's ``progress`` callback (called once per written frame): reads VmRSS at every frame (tens of
    microseconds), keeps the maximum and the last value, and stores every ``every``-th frame's value; the value
    at ``baseline_after`` processed frames is the baseline."""

    def __init__(self, baseline_after: int, every: int = 10) -> None:
        self.baseline_after = max(1, int(baseline_after))
        self.every = max(1, int(every))
        self.n = 0
        self.samples: list[tuple[int, float]] = []  # (processed frames, MB)
        self.baseline: float | None = None
        self.last: tuple[int, float] | None = None
        self.max: float | None = None

    def __call__(self, k: int = 1) -> None:
        self.n += k
        v = rss_mb()
        if v is None:
            return
        self.last = (self.n, v)
        self.max = v if self.max is None else max(self.max, v)
        if self.n == self.baseline_after:
            self.baseline = v
        if self.n % self.every == 0 or self.n == self.baseline_after:
            self.samples.append(self.last)

    def finish(self) -> None:
        """After the run: the last frame's value ends the series."""
        if self.last is not None and (not self.samples or self.samples[-1][0] != self.last[0]):
            self.samples.append(self.last)

    def slope_mb_per_1000(self) -> float | None:
        import numpy as np

        pts = [(n, v) for n, v in self.samples if n >= self.baseline_after]
        if len(pts) < 10:  # too few samples for a trend
            return None
        x, y = np.array(pts, dtype=np.float64).T
        if x.max() == x.min():
            return None
        return float(np.polyfit(x, y, 1)[0] * 1000.0)


# ============================================================================================ runs
def _summary_core(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("complete", "stop_reason", "live", "frames_in", "frames_out", "frames_dropped", "wall_s", "fps",
            "latency_ms", "source_stats", "warnings", "errors", "outputs", "interrupted_by")
    core = {k: summary.get(k) for k in keep}
    stages = summary.get("stages_ms") or {}
    core["stages_ms"] = stages
    return core


def run_pipeline(engine, video: Path, out_dir: Path, *, roi, realtime: bool, speed: float, max_frames: int,
                 progress=None, workers: int = 1) -> dict[str, Any]:
    """One StreamPipeline run into a fresh ``out_dir`` (overlay.mp4 + PNG masks + report), as the CLI does."""
    from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
    from textsam_eus.stream.sources import open_source

    cfg = PipelineConfig(roi=roi, masks="png", write_video=True, max_frames=max_frames, workers=workers)
    source = open_source(str(video), realtime=realtime, speed=speed)
    with source:
        summary = StreamPipeline(engine, source, out_dir, cfg, progress=progress).run()
    return summary


def _engine_p50(summary: dict[str, Any]) -> float | None:
    return ((summary.get("stages_ms") or {}).get("engine_total") or {}).get("p50")


def measure_latency(engine, video: Path, work: Path, roi, speed: float, frames: int, fps: float,
                    keep: bool) -> dict[str, Any]:
    out_dir = work / f"latency-x{speed:g}"
    t = time.perf_counter()
    summary = run_pipeline(engine, video, out_dir, roi=roi, realtime=True, speed=speed, max_frames=frames)
    lat = summary.get("latency_ms") or {}
    period_ms = 1e3 / (fps * speed)
    model_ms = _engine_p50(summary)
    budget = 2 * period_ms + model_ms if model_ms is not None else None
    p99 = lat.get("p99")
    ok = p99 is not None and budget is not None and p99 <= budget
    row = {"measurement": "realtime_latency", "speed": speed, "frames_requested": frames,
           "frame_period_ms": period_ms, "model_p50_ms": model_ms, "target_ms": budget,
           "target": "p99 capture-to-overlay <= 2 frame periods + model p50 (engine_total)",
           "p50_ms": lat.get("p50"), "p95_ms": lat.get("p95"), "p99_ms": p99, "max_ms": lat.get("max"),
           "frames_in": summary["frames_in"], "frames_out": summary["frames_out"],
           "frames_dropped": summary["frames_dropped"], "fps": summary["fps"],
           "late_frames": (summary.get("source_stats") or {}).get("late_frames"),
           "result": "PASS" if ok else "FAIL", "seconds": round(time.perf_counter() - t, 2),
           "summary": _summary_core(summary)}
    if not keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    return row


def measure_soak(engine, video: Path, work: Path, roi, speed: float, frames: int, baseline_after: int,
                 limit_mb: float, rss_every: int, keep: bool) -> dict[str, Any]:
    out_dir = work / f"soak-x{speed:g}"
    gc.collect()
    hwm_reset = reset_peak_rss()
    sampler = RssSampler(baseline_after, rss_every)
    rss_before = rss_mb()
    t = time.perf_counter()
    summary = run_pipeline(engine, video, out_dir, roi=roi, realtime=True, speed=speed, max_frames=frames,
                           progress=sampler)
    sampler.finish()
    rss_after_run = rss_mb()
    status = proc_status()
    end = sampler.last
    growth = (end[1] - sampler.baseline) if end and sampler.baseline is not None else None
    dropped = summary["frames_dropped"]
    reasons = []
    if growth is None:
        reasons.append(f"no baseline: fewer than {sampler.baseline_after} frames were processed")
    elif growth >= limit_mb:
        reasons.append(f"RSS grew {growth:.1f} MB (limit {limit_mb:g})")
    if not dropped:
        reasons.append("no frame was dropped: the live path was not exercised")
    row = {"measurement": "soak", "speed": speed, "frames_requested": frames,
           "target": f"RSS growth (baseline after {sampler.baseline_after} processed frames -> last frame) "
                     f"< {limit_mb:g} MB and frames dropped > 0",
           "rss_limit_mb": limit_mb, "rss_before_run_mb": rss_before, "rss_baseline_mb": sampler.baseline,
           "rss_baseline_after_frames": sampler.baseline_after, "rss_end_mb": end[1] if end else None,
           "rss_end_at_frame": end[0] if end else None, "rss_growth_mb": growth,
           "rss_max_sampled_mb": sampler.max, "rss_after_run_mb": rss_after_run,
           "rss_peak_vmhwm_mb": status.get("VmHWM"), "rss_peak_scope": "soak run" if hwm_reset else "process",
           "rss_slope_mb_per_1000_frames": sampler.slope_mb_per_1000(),
           "rss_samples": [[n, round(v, 2)] for n, v in sampler.samples],
           "frames_in": summary["frames_in"], "frames_out": summary["frames_out"], "frames_dropped": dropped,
           "late_frames": (summary.get("source_stats") or {}).get("late_frames"),
           "fps": summary["fps"], "latency_ms": summary.get("latency_ms"),
           "result": "FAIL" if reasons else "PASS", "fail_reasons": reasons,
           "seconds": round(time.perf_counter() - t, 2), "summary": _summary_core(summary)}
    if not keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    return row


def measure_model_rate(engine, clip: Path, frames: int, warmup: int) -> dict[str, Any]:
    """``benchmarks/run.py``'s model mode: engine.segment on pre-decoded ROI-cropped frames, one at a time."""
    clip_frames, clip_info = load_frames(str(clip), frames, 0)  # the clip's frames (50), ROI-cropped
    res = run_model_mode(MeasuredEngine(engine, "model", cuda=False), clip_frames, warmup, frames, engine.iterations)
    return {"fps": res["fps"], "fps_definition": res["fps_definition"], "frames_measured": res["frames_measured"],
            "warmup": warmup, "iterations": engine.iterations, "latency_ms": res["latency_ms"],
            "encoder_frame_ms": res["encoder_frame_ms"], "decoder_frame_ms": res["decoder_frame_ms"],
            "clip": clip_info["desc"], "distinct_frames": len(clip_frames)}


def measure_throughput(engine, video: Path, clip: Path, work: Path, roi, frames: int, warmup: int,
                       min_ratio: float, keep: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Model-only rate with ``engine`` (all threads on one frame), then file mode as ``textsam-eus stream`` runs
    it: ``--workers`` segment workers, each with threads / workers threads (its own engine)."""
    import torch

    out_dir = work / "file-mode"
    t = time.perf_counter()
    model = measure_model_rate(engine, clip, frames, warmup)
    workers = args.workers
    per_worker = max(1, args.threads // workers)
    file_engine = engine
    if workers > 1:
        file_engine, _ = build_engine(argparse.Namespace(**{**vars(args), "threads": per_worker}))
        for f in load_frames(str(clip), warmup, 0)[0]:
            file_engine.segment(f)
    done: list[float] = []  # perf_counter() as each frame is written
    old_threads = torch.get_num_threads()
    torch.set_num_threads(per_worker if workers > 1 else args.threads)
    try:
        summary = run_pipeline(file_engine, video, out_dir, roi=roi, realtime=False, speed=1.0, max_frames=frames,
                               progress=lambda _k: done.append(time.perf_counter()), workers=workers)
    finally:
        torch.set_num_threads(old_threads)
        if file_engine is not engine:
            file_engine.close()
    rate = summary["frames_out"] / summary["wall_s"] if summary["wall_s"] > 0 else None
    steady = ((len(done) - warmup) / (done[-1] - done[warmup - 1])
              if warmup and len(done) > warmup + 1 and done[-1] > done[warmup - 1] else None)
    ratio = rate / model["fps"] if rate and model["fps"] else None
    row = {"measurement": "file_throughput", "frames_requested": frames,
           "target": f"pipeline frames_out / wall >= {min_ratio:g} x model-only rate", "min_ratio": min_ratio,
           "pipeline_fps": rate, "pipeline_fps_definition": "frames_out / summary wall_s (whole run, all outputs)",
           "pipeline_fps_after_warmup": steady,
           "pipeline_fps_after_warmup_definition": f"frames written per second after the first {warmup}",
           "model_fps": model["fps"], "ratio": ratio, "workers": workers, "threads_per_worker": per_worker,
           "ratio_after_warmup": steady / model["fps"] if steady and model["fps"] else None,
           "model": model, "frames_in": summary["frames_in"], "frames_out": summary["frames_out"],
           "frames_dropped": summary["frames_dropped"], "wall_s": summary["wall_s"],
           "result": "PASS" if ratio is not None and ratio >= min_ratio else "FAIL",
           "seconds": round(time.perf_counter() - t, 2), "summary": _summary_core(summary)}
    if not keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    return row


# ============================================================================================ engine
def build_engine(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from textsam_eus.commands._engine import make_engine

    kwargs: dict[str, Any] = {"engine": args.engine, "checkpoint": args.checkpoint, "bundle": args.bundle,
                              "device": "cpu", "quiet": True, "threads": args.threads}
    threads_info: dict[str, Any] = {"torch_intra_op": None, "engine": args.threads}
    t = time.perf_counter()
    engine = make_engine(**kwargs)
    setup_s = time.perf_counter() - t
    sessions = getattr(engine, "sessions", None)
    if sessions:  # onnxruntime: what the sessions were given (0 = onnxruntime's default, the physical cores)
        try:
            threads_info["onnxruntime_intra_op_option"] = next(iter(sessions.values())).get_session_options(
            ).intra_op_num_threads
        except Exception:  # noqa: BLE001 - informative only
            pass
    import torch

    threads_info["torch_intra_op"] = torch.get_num_threads()
    return engine, {"info": engine.info(), "threads": threads_info, "iterations": engine.iterations,
                    "setup_s": round(setup_s, 3)}


# ============================================================================================ reports
def _n(v, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}"


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    m = meta["machine"]
    eng = meta["engine"]
    lines = [f"# Stream soak ({meta['started']})", "",
             f"- command: `{meta['command']}`",
             f"- machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['memory_gb']} GB; load average at "
             f"start {', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start') or [])}, at end "
             f"{', '.join(f'{x:.2f}' for x in meta.get('loadavg_at_end') or [])}",
             f"- engine: {eng['info'].get('engine')} on {eng['info'].get('device')}, {args_str(meta['args'])}; "
             f"threads: torch {eng['threads']['torch_intra_op']}, engine {eng['threads']['engine']}",
             f"- recording: {meta['recording']['frames']} frames = {meta['recording']['loops']} x "
             f"{Path(meta['recording']['source_clip']).name} remuxed ({meta['recording']['codec']}, "
             f"{meta['recording']['size'][0]}x{meta['recording']['size'][1]}, {_n(meta['recording']['fps'], 2)} fps),"
             f" ROI {meta['roi']}; outputs: overlay.mp4 + PNG masks",
             f"- commit: {(m.get('git') or {}).get('commit') or 'unknown'}", ""]
    for note in data.get("notes") or []:
        lines.append(f"> {note}")
    if data.get("notes"):
        lines.append("")
    rows = data["rows"]
    lat = [r for r in rows if r["measurement"] == "realtime_latency"]
    if lat:
        lines += ["## Realtime latency (capture to overlay, ms)", "",
                  "| speed | frames in / out / dropped | late | fps | p50 | p95 | p99 | max | model p50 | target (2 "
                  "periods + model) | result |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in lat:
            lines.append(f"| x{r['speed']:g} | {r['frames_in']} / {r['frames_out']} / {r['frames_dropped']} | "
                         f"{r['late_frames'] if r['late_frames'] is not None else '-'} | "
                         f"{_n(r['fps'])} | {_n(r['p50_ms'])} | {_n(r['p95_ms'])} | {_n(r['p99_ms'])} | "
                         f"{_n(r['max_ms'])} | {_n(r['model_p50_ms'])} | <= {_n(r['target_ms'])} | "
                         f"**{r['result']}** |")
        lines += ["", "late: frames the replay released after their due time (its decoding thread fell behind).", ""]
    soak = [r for r in rows if r["measurement"] == "soak"]
    if soak:
        lines += ["## Soak (realtime replay)", "",
                  "| speed | frames in / out / dropped | RSS baseline (after n frames) | RSS end | growth | max RSS "
                  "(sampled / VmHWM) | slope MB/1000 frames | target | result |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in soak:
            lines.append(f"| x{r['speed']:g} | {r['frames_in']} / {r['frames_out']} / {r['frames_dropped']} | "
                         f"{_n(r['rss_baseline_mb'])} MB ({r['rss_baseline_after_frames']}) | {_n(r['rss_end_mb'])} MB"
                         f" | {_n(r['rss_growth_mb'])} MB | {_n(r['rss_max_sampled_mb'])} / "
                         f"{_n(r['rss_peak_vmhwm_mb'])} MB | {_n(r['rss_slope_mb_per_1000_frames'], 2)} | "
                         f"growth < {r['rss_limit_mb']:g} MB, drops > 0 | **{r['result']}** |")
        lines.append("")
    thr = [r for r in rows if r["measurement"] == "file_throughput"]
    if thr:
        lines += ["## File-mode throughput (every frame, all outputs on)", "",
                  "| frames | pipeline fps (frames_out / wall) | after warm-up | model-only fps | ratio | target | "
                  "result |", "|---|---|---|---|---|---|---|"]
        for r in thr:
            lines.append(f"| {r['frames_out']} | {_n(r['pipeline_fps'])} | {_n(r['pipeline_fps_after_warmup'])} | "
                         f"{_n(r['model_fps'])} | {_n(r['ratio'], 3)} | >= {r['min_ratio']:g} | "
                         f"**{r['result']}** |")
        lines.append("")
    errors = [r for r in rows if r.get("result") == "ERROR"]
    if errors:
        lines += ["## Errors", ""] + [f"- {r['measurement']}: {r['error']}" for r in errors] + [""]
    return "\n".join(lines)


def args_str(a: dict[str, Any]) -> str:
    return (f"checkpoint {a['checkpoint']}, frames {a['frames']}, latency frames {a['latency_frames']}, "
            f"throughput frames {a['throughput_frames']}")


def save(out: Path, data: dict[str, Any]) -> None:
    from textsam_eus.stream.sinks.report import write_json_atomic

    write_json_atomic(out / "results.json", data)


# ============================================================================================ CLI
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
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads, and the engine's threads when "
                                                          "make_engine takes them (default 2)")
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
        engine, einfo = build_engine(args)
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
                        engine, long_mp4, clip, work, roi, args.throughput_frames, args.warmup, args.min_ratio,
                        args.keep_work, args)))
                elif what == "latency":
                    for s in speeds:
                        jobs.append(("realtime_latency", lambda s=s: measure_latency(
                            engine, long_mp4, work, roi, s, args.latency_frames, fps, args.keep_work)))
                else:
                    jobs.append(("soak", lambda: measure_soak(
                        engine, long_mp4, work, roi, args.soak_speed, args.frames, args.rss_baseline_after,
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

"""The soak's runs (``stream_soak.py``): the engine and each pipeline run as ``textsam-eus stream`` makes them
(:class:`~textsam_eus.runs.RunSettings`), and the three measurements: realtime latency, the soak (RSS, drops) and
file-mode throughput against the model-only rate."""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path
from typing import Any

from textsam_eus.runs import RunSettings

from .frames import load_frames
from .machine import proc_status, reset_peak_rss, rss_mb
from .modes import run_model_mode
from .rss import RssSampler
from .timing import MeasuredEngine


def _summary_core(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("complete", "stop_reason", "live", "frames_in", "frames_out", "frames_dropped", "wall_s", "fps",
            "latency_ms", "source_stats", "warnings", "errors", "outputs", "interrupted_by")
    core = {k: summary.get(k) for k in keep}
    stages = summary.get("stages_ms") or {}
    core["stages_ms"] = stages
    return core


def run_pipeline(engine, settings: RunSettings, video: Path, out_dir: Path, *, realtime: bool, speed: float,
                 max_frames: int, progress=None, workers: int = 1) -> dict[str, Any]:
    """One StreamPipeline run into a fresh ``out_dir`` as ``textsam-eus stream --source VIDEO [--realtime --speed
    S] --max-frames N --workers W`` with ``settings`` runs it (overlay.mp4 + PNG masks + summary, report.html)."""
    from textsam_eus.stream.pipeline import StreamPipeline

    run = settings.replace(realtime=realtime, speed=speed, max_frames=max_frames, workers=str(workers))
    source = run.open_source(str(video))
    with source:
        cfg = run.for_job(str(video), out_dir).to_pipeline_config(source)
        summary = StreamPipeline(engine, source, out_dir, cfg, progress=progress).run()
    return summary


def _engine_p50(summary: dict[str, Any]) -> float | None:
    return ((summary.get("stages_ms") or {}).get("engine_total") or {}).get("p50")


def measure_latency(engine, settings: RunSettings, video: Path, work: Path, speed: float, frames: int, fps: float,
                    keep: bool) -> dict[str, Any]:
    out_dir = work / f"latency-x{speed:g}"
    t = time.perf_counter()
    summary = run_pipeline(engine, settings, video, out_dir, realtime=True, speed=speed, max_frames=frames)
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


def measure_soak(engine, settings: RunSettings, video: Path, work: Path, speed: float, frames: int, baseline_after: int,
                 limit_mb: float, rss_every: int, keep: bool) -> dict[str, Any]:
    out_dir = work / f"soak-x{speed:g}"
    gc.collect()
    hwm_reset = reset_peak_rss()
    sampler = RssSampler(baseline_after, rss_every)
    rss_before = rss_mb()
    t = time.perf_counter()
    summary = run_pipeline(engine, settings, video, out_dir, realtime=True, speed=speed, max_frames=frames,
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


def measure_throughput(engine, settings: RunSettings, video: Path, clip: Path, work: Path, frames: int, warmup: int,
                       min_ratio: float, keep: bool, workers: int) -> dict[str, Any]:
    """Model-only rate with ``engine`` (all threads on one frame), then file mode as ``textsam-eus stream`` runs
    it: ``--workers`` segment workers, each with threads / workers threads (its own engine)."""
    import torch

    out_dir = work / "file-mode"
    t = time.perf_counter()
    model = measure_model_rate(engine, clip, frames, warmup)
    threads = settings.threads or 1
    per_worker = max(1, threads // workers)
    file_engine = engine
    if workers > 1:
        file_engine, _ = build_engine(settings.replace(threads=per_worker))
        for f in load_frames(str(clip), warmup, 0)[0]:
            file_engine.segment(f)
    done: list[float] = []  # perf_counter() as each frame is written
    old_threads = torch.get_num_threads()
    torch.set_num_threads(per_worker if workers > 1 else threads)
    try:
        summary = run_pipeline(file_engine, settings, video, out_dir, realtime=False, speed=1.0, max_frames=frames,
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


def build_engine(settings: RunSettings) -> tuple[Any, dict[str, Any]]:
    """(the engine of ``settings``, as the CLI opens it; what it was given and how long it took)."""
    threads_info: dict[str, Any] = {"torch_intra_op": None, "engine": settings.threads}
    t = time.perf_counter()
    engine = settings.open_engine(quiet=True)  # onnxruntime without --bundle: the export made in the cache once
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

"""The measurement of one row: ``model``/``reference`` (``segment`` on decoded frames) or ``stream`` (the pipeline)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .frames import SYNTH_SIZE
from .timing import MeasuredEngine, stats, summarise


def run_model_mode(measured: MeasuredEngine, frames: list[np.ndarray], warmup: int, n: int,
                   iterations: int) -> dict[str, Any]:
    """``segment`` on pre-decoded frames, one at a time; the first ``warmup`` frames are not counted."""
    for i in range(warmup + n):
        measured.segment(frames[i % len(frames)], iterations=iterations)
    kept = measured.frames[warmup:]
    latency = [f["wall"] for f in kept]
    mean = float(np.mean(latency)) if latency else None
    stage_frames = [{**f["timings"], "segment_wall": f["wall"]} for f in kept]
    out = summarise(kept, stage_frames, latency, 1e3 / mean if mean else None)
    out["latency_definition"] = "engine.segment wall time per frame (preprocess .. postprocess)"
    out["fps_definition"] = "1000 / mean per-frame latency (one frame at a time)"
    return out


def _stream_source(clip_info: dict[str, Any], total: int, seed: int):
    """(source, its ``--roi``)."""
    from textsam_eus.stream.sources import PhantomSource, VideoFileSource

    if clip_info["kind"] == "video":
        return VideoFileSource(clip_info["path"]), clip_info.get("roi") or "none"
    w, h = SYNTH_SIZE
    return PhantomSource(n_frames=total, seed=seed, width=w, height=h), "none"


def _stream_fps(done: list[float], warmup: int, summary: dict[str, Any]) -> float | None:
    if warmup and len(done) > warmup:
        return (len(done) - warmup) / (done[-1] - done[warmup - 1])
    return summary.get("fps") or None


def run_stream_mode(measured: MeasuredEngine, clip_info: dict[str, Any], warmup: int, n: int, iterations: int,
                    seed: int, tmp: Path) -> dict[str, Any]:
    """The StreamPipeline on the clip as ``textsam-eus stream --roi ROI --iterations I --max-frames N --workers 1
    --no-report`` runs it (H.264 overlay + PNG masks written; no summary or latency files either)."""
    from textsam_eus.runs import RunSettings
    from textsam_eus.stream.pipeline import StreamPipeline

    total = warmup + n
    source, roi = _stream_source(clip_info, total, seed)
    done: list[float] = []
    out_dir = Path(tempfile.mkdtemp(prefix="stream-", dir=tmp))
    settings = RunSettings(roi=roi, iterations=iterations, max_frames=total, workers="1", no_report=True)
    try:
        with source:
            cfg = settings.to_pipeline_config(source, report=False, handle_signals=False)
            pipe = StreamPipeline(measured, source, out_dir, cfg,
                                  progress=lambda _k: done.append(time.perf_counter()))
            summary = pipe.run()
        records = [r for r in pipe.report.records() if not r["dropped"]]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    kept = records[warmup:]
    stage_frames = [dict(r["stages"]) for r in kept]
    latency = [r["stages"].get("capture_to_written") for r in kept]
    out = summarise(measured.frames[warmup:], stage_frames, latency, _stream_fps(done, warmup, summary))
    out["latency_capture_to_overlay_ms"] = stats([r["latency_ms"] for r in kept])
    # what a live source (newest-frame queue, no backlog) would see: the file reader runs ahead of the model
    out["latency_without_queue_wait_ms"] = stats([
        r["stages"]["capture_to_written"] - r["stages"].get("queue_wait", 0.0)
        for r in kept if r["stages"].get("capture_to_written")])
    out["latency_definition"] = "capture/decode of the frame -> overlay drawn and written to the sinks"
    out["fps_definition"] = "frames written per second after the warm-up frames (stages overlap in threads)"
    out["frames_requested"] = total
    out["frames_delivered"] = len(records)
    return out

"""The streaming runner: outputs, ordering, live drops, reliability (corrupt files, lost devices, signals), memory."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import av
import numpy as np
import pytest
from conftest import shared_data
from fakes import DyingCapture, FakeEngine, SyntheticSource, rss_mb

from textsam_eus.cli import main
from textsam_eus.stream.record import FrameRecord
from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
from textsam_eus.stream.sinks.encoders import VideoEncoder
from textsam_eus.stream.base import FrameSource, SourceError
from textsam_eus.stream.sources.capture import CaptureSource
from textsam_eus.stream.roi import ROI
from textsam_eus.stream.sources import PhantomSource, VideoFileSource


def _decode_all(path):
    with av.open(str(path)) as c:
        return [f for f in c.decode(video=0)]


def test_file_every_frame_in_order_with_outputs(tmp_path):
    src = PhantomSource(n_frames=20, width=160, height=120, fps=15)
    summary = StreamPipeline(FakeEngine(), src, tmp_path).run()
    assert summary["frames_out"] == 20 and summary["frames_dropped"] == 0
    frames = _decode_all(tmp_path / "overlay.mp4")
    assert len(frames) == 20 and (frames[0].width, frames[0].height) == (160, 120)
    pts = [float(f.time) for f in frames]
    assert np.allclose(np.diff(pts), 1 / 15, atol=1e-3)  # the source's frame rate and timestamps are kept
    masks = sorted((tmp_path / "masks").iterdir())
    assert [m.name for m in masks] == [f"mask_{i:06d}.png" for i in range(20)]
    report = json.loads((tmp_path / "latency.json").read_text())
    assert [r["index"] for r in report["frames"]] == list(range(20))
    s = json.loads((tmp_path / "summary.json").read_text())
    for stage in ("video_decode", "overlay", "sink_write", "queue_wait"):
        assert stage in s["stages_ms"], stage
    assert s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]


def test_real_model_on_real_eus_clip_with_roi(tmp_path):
    clips = shared_data("eus_clips")
    from textsam_eus.engines import create_engine
    from textsam_eus.model.registry import build_textsam

    engine = create_engine("torch", model=build_textsam("tiny"), device="cpu")
    cfg = PipelineConfig(roi=ROI.preset("eus800x600"), temporal=True, max_frames=12)
    with VideoFileSource(clips / "cancer_v1.mp4") as src:
        summary = StreamPipeline(engine, src, tmp_path, cfg).run()
    assert summary["frames_out"] == 12 and summary["complete"] and summary["roi"] == "44,56,711,457"
    frames = _decode_all(tmp_path / "overlay.mp4")
    assert len(frames) == 12 and (frames[0].width, frames[0].height) == (800, 600)  # back in the full screen
    import cv2

    from textsam_eus.core.mask_metrics import mask_iou

    masks = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((tmp_path / "masks").glob("mask_*.png"))]
    assert len(masks) == 12 and all(m.shape == (600, 800) for m in masks)
    outside = np.ones((600, 800), bool)
    outside[56:513, 44:755] = False
    assert not any(m[outside].any() for m in masks)  # nothing outside the ROI
    stability = np.mean([mask_iou(a, b) for a, b in zip(masks, masks[1:])])  # the written masks' own IoU
    assert summary["temporal"]["consecutive_mask_iou_mean"] == pytest.approx(stability, abs=1e-6)


def test_roi_maps_masks_back_to_the_full_screen(tmp_path):
    src = PhantomSource(n_frames=3, width=200, height=150)
    StreamPipeline(FakeEngine(), src, tmp_path, PipelineConfig(roi=ROI(20, 10, 100, 80))).run()
    import cv2

    m = cv2.imread(str(tmp_path / "masks" / "mask_000000.png"), cv2.IMREAD_GRAYSCALE)
    assert m.shape == (150, 200) and m[50, 70] == 255 and m[5, 5] == 0 and m[140, 190] == 0


def test_live_source_keeps_only_the_newest_frame(tmp_path):
    summary = StreamPipeline(FakeEngine(delay_s=0.05), SyntheticSource(60, lambda i: np.full((48, 64, 3), i % 255, np.uint8), fps=100.0, live=True,
                                             interval=0.01), tmp_path,
                             PipelineConfig(masks="none")).run()
    assert summary["frames_dropped"] > 10
    assert summary["frames_out"] + summary["frames_dropped"] == 60
    report = json.loads((tmp_path / "latency.json").read_text())
    assert report["summary"]["frames_dropped"] == summary["frames_dropped"]
    written = [r for r in report["frames"] if not r["dropped"]]  # a latency measured for every written frame
    assert len(written) == summary["frames_out"]
    assert all(np.isfinite(r["latency_ms"]) and r["latency_ms"] > 0 for r in written)
    assert summary["latency_ms"]["max"] == pytest.approx(max(r["latency_ms"] for r in written))


def test_temporal_seeding_uses_previous_box(tmp_path):
    eng = FakeEngine()
    summary = StreamPipeline(eng, PhantomSource(n_frames=5, width=96, height=96), tmp_path,
                             PipelineConfig(temporal=True, masks="none")).run()
    assert summary["temporal"]["seeded_frames"] == 4
    assert "seed_prompt" not in eng.calls[0] and "seed_prompt" in eng.calls[1]
    assert summary["temporal"]["consecutive_mask_iou_mean"] == pytest.approx(1.0)


def _write_ts(path, n=40, size=(96, 64)):
    with VideoEncoder(path, 15.0) as sink:
        for i in range(n):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[:, : (i * 2) % size[0]] = 200
            sink.write(img)


def test_truncated_file_is_processed_and_output_finalised(tmp_path):
    good = tmp_path / "clip.ts"
    _write_ts(good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.ts"
    cut = bytearray(data[: len(data) * 2 // 3])
    cut[len(cut) // 2: len(cut) // 2 + 2000] = bytes(2000)  # corrupt bytes in the middle too
    bad.write_bytes(bytes(cut))
    with VideoFileSource(bad) as src:
        summary = StreamPipeline(FakeEngine(), src, tmp_path / "out").run()
    assert 5 < summary["frames_out"] < 40
    frames = _decode_all(tmp_path / "out" / "overlay.mp4")  # playable: the MP4 was finalised
    assert len(frames) == summary["frames_out"]
    assert len(list((tmp_path / "out" / "masks").iterdir())) == summary["frames_out"]


def test_capture_device_lost_mid_run_stops_cleanly(tmp_path):
    opened = []

    def open_fn(device, api):
        if opened:  # reconnect attempts find no device
            return None
        opened.append(1)
        return DyingCapture(8)

    src = CaptureSource(0, max_reconnects=3, reconnect_delay=0.0, open_fn=open_fn)
    summary = StreamPipeline(FakeEngine(), src, tmp_path, PipelineConfig(masks="png")).run()
    assert summary["source_stats"]["lost"] is True and summary["source_stats"]["reconnect_attempts"] == 3
    assert summary["frames_out"] + summary["frames_dropped"] == 8
    frames = _decode_all(tmp_path / "overlay.mp4")
    assert len(frames) == summary["frames_out"] > 0
    assert len(list((tmp_path / "masks").iterdir())) == summary["frames_out"]


def test_sigint_finalises_outputs(tmp_path):
    src = PhantomSource(n_frames=400, width=96, height=96)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        summary = StreamPipeline(FakeEngine(delay_s=0.01), src, tmp_path).run()
    finally:
        timer.cancel()
    assert summary["interrupted_by"] == "SIGINT"
    assert 0 < summary["frames_out"] < 400
    assert len(_decode_all(tmp_path / "overlay.mp4")) == summary["frames_out"]
    assert json.loads((tmp_path / "summary.json").read_text())["frames_out"] == summary["frames_out"]


def test_bad_inputs_fail_before_any_work(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    assert main(["stream", "--source", str(tmp_path / "notes.mp4"), "--out", str(tmp_path / "o1"),
                 "--engine", "torch"]) == 1
    assert not (tmp_path / "o1").exists()
    with pytest.raises(SourceError):
        VideoFileSource(tmp_path / "notes.mp4")
    assert main(["stream", "--source", "97", "--out", str(tmp_path / "o2"), "--engine", "torch"]) == 1
    assert not (tmp_path / "o2").exists()
    with pytest.raises(SourceError, match="outside"):
        StreamPipeline(FakeEngine(), PhantomSource(n_frames=2, width=100, height=80), tmp_path / "o3",
                       PipelineConfig(roi=ROI(50, 50, 100, 100)))
    assert not (tmp_path / "o3").exists()


def test_engine_error_keeps_what_was_written(tmp_path):
    class Breaks(FakeEngine):
        def segment(self, frame, **kw):
            if len(self.calls) >= 5:
                raise RuntimeError("GPU fell off the bus")
            return super().segment(frame, **kw)

    with pytest.raises(RuntimeError, match="fell off"):
        StreamPipeline(Breaks(), PhantomSource(n_frames=30, width=96, height=96), tmp_path).run()
    assert len(_decode_all(tmp_path / "overlay.mp4")) == 5
    assert len(list((tmp_path / "masks").iterdir())) == 5


def _moving_noise(n):
    base = np.random.default_rng(0).integers(0, 255, (72, 96, 3), dtype=np.uint8)
    return SyntheticSource(n, lambda i: np.roll(base, i, axis=1))


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_run(tmp_path):
    measured = {}

    def progress(_n):
        done = measured.setdefault("n", 0) + 1
        measured["n"] = done
        if done in (400, 2400):
            measured[done] = rss_mb()

    StreamPipeline(FakeEngine(), _moving_noise(2400), tmp_path, PipelineConfig(masks="video"), progress=progress).run()
    assert measured["n"] == 2400
    assert measured[2400] - measured[400] < 40, measured
    assert len(_decode_all(tmp_path / "overlay.mp4")) == 2400


@pytest.mark.slow
def test_stream_cli_folder_of_videos_and_demo(tmp_path):
    from textsam_eus.model.checkpoint import save_checkpoint
    from textsam_eus.model.registry import build_textsam

    ckpt = save_checkpoint(build_textsam("tiny"), tmp_path / "m.safetensors")
    (tmp_path / "videos").mkdir()
    for name in ("a.ts", "b.ts"):
        _write_ts(tmp_path / "videos" / name, n=6)
    assert main(["stream", "--source", str(tmp_path / "videos"), "--out", str(tmp_path / "out"), "--checkpoint",
                 str(ckpt), "--engine", "torch", "--no-progress"]) == 0
    for name in ("a", "b"):
        assert len(_decode_all(tmp_path / "out" / name / "overlay.mp4")) == 6
    assert main(["demo", "--checkpoint", str(ckpt), "--engine", "torch", "--frames", "6", "--size", "160x120",
                 "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    assert len(_decode_all(tmp_path / "demo" / "overlay.mp4")) == 6

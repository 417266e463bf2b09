"""Streaming you can leave running: live sources, drops without memory, outputs that survive every stop, guarded
output folders, inputs that change size, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from fakes import DyingCapture, FakeEngine, SyntheticSource, rss_mb

from textsam_eus.cli import main
from textsam_eus.stream.base import FrameSource, SourceError
from textsam_eus.stream.sources.capture import CaptureSource
from textsam_eus.stream.sinks.encoders import VideoEncoder, read_mask_video
from textsam_eus.stream.outdir import OutputError, OutputFolder
from textsam_eus.stream.pipeline import PipelineConfig, StreamError, StreamPipeline
from textsam_eus.stream.record import FrameRecord
from textsam_eus.stream.sources.replay import RealtimeReplay
from textsam_eus.stream.sources import PhantomSource, VideoFileSource, open_source

TESTS = Path(__file__).resolve().parent


def _decode(path):
    with av.open(str(path)) as c:
        return [f for f in c.decode(video=0)]


def _strict_json(path):
    """Parse JSON, refusing NaN/Infinity (which json.loads accepts by default but JSON does not)."""
    def bad(c):
        raise ValueError(f"invalid JSON constant {c}")
    return json.loads(Path(path).read_text(), parse_constant=bad)


def _write_clip(path, n=30, size=(96, 64), fps=15.0):
    with VideoEncoder(path, fps) as enc:
        for i in range(n):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[:, : (i * 3) % size[0]] = 200
            enc.write(img, i / fps)
    return path


# --------------------------------------------------------------------------- live sources


def test_lavfi_live_paced_source_end_to_end(tmp_path):
    src = open_source("lavfi:testsrc2=size=160x120:rate=30,realtime")
    assert src.is_live and src.size == (160, 120) and src.fps == pytest.approx(30)
    t0 = time.monotonic()
    with src:
        summary = StreamPipeline(FakeEngine(delay_s=0.06), src, tmp_path, PipelineConfig(max_frames=30)).run()
    wall = time.monotonic() - t0
    assert summary["live"] and summary["frames_in"] == 30
    # paced at 30 fps by the graph's realtime filter: a lower bound, which a slow machine only makes longer
    assert wall > 0.8
    assert summary["frames_dropped"] > 5  # a 60 ms model cannot keep up with 30 fps: the newest frame wins
    assert summary["frames_out"] + summary["frames_dropped"] == 30
    lat = summary["latency_ms"]
    assert lat["p50"] > 0 and np.isfinite(lat["max"]) and lat["p50"] <= lat["p99"] <= lat["max"]
    assert len(_decode(tmp_path / "overlay.mp4")) == summary["frames_out"]


@pytest.mark.slow
def test_lavfi_source_through_the_cli(tmp_path):
    from textsam_eus.model.checkpoint import save_checkpoint
    from textsam_eus.model.registry import build_textsam

    ckpt = save_checkpoint(build_textsam("tiny"), tmp_path / "m.safetensors")
    out = tmp_path / "out"
    assert main(["stream", "--source", "lavfi:testsrc2=size=128x96:rate=25,realtime", "--out", str(out),
                 "--checkpoint", str(ckpt), "--engine", "torch", "--max-frames", "8", "--no-progress"]) == 0
    s = _strict_json(out / "summary.json")
    assert s["complete"] and s["stop_reason"] == "max frames (8)" and s["frames_in"] == 8 and s["live"]


def test_v4l2_source_names_missing_device():
    with pytest.raises(SourceError, match="does not exist"):
        open_source("v4l2:/dev/video97")


@pytest.mark.slow
def test_live_drops_keep_no_pixels(tmp_path):
    before = rss_mb()
    summary = StreamPipeline(FakeEngine(delay_s=0.05), SyntheticSource(400, lambda i: np.full((1080, 1920, 3), i % 255, np.uint8), fps=200.0,
                                             live=True, interval=0.004), tmp_path,
                             PipelineConfig(masks="none", write_video=False)).run()
    grown = rss_mb() - before
    assert summary["frames_dropped"] > 300  # ~6 MB each: kept, they would take ~2 GB
    assert grown < 150, f"RSS grew {grown:.0f} MB over {summary['frames_dropped']} dropped 1080p frames"
    dropped = [r for r in _strict_json(tmp_path / "latency.json")["frames"] if r["dropped"]]
    assert len(dropped) == summary["frames_dropped"] and "timestamp" in dropped[0]


def test_realtime_replay_paces_a_file_as_a_live_source(tmp_path):
    clip = _write_clip(tmp_path / "clip.mp4", n=30, fps=15.0)  # 2 s of video
    src = open_source(clip, realtime=True, speed=4.0)
    assert isinstance(src, RealtimeReplay) and src.is_live and src.fps == pytest.approx(60)
    with src:
        summary = StreamPipeline(FakeEngine(delay_s=0.04), src, tmp_path / "out", PipelineConfig()).run()
    assert summary["frames_dropped"] > 0 and summary["frames_out"] + summary["frames_dropped"] == 30
    # the pacing itself, on a clock that only moves when the replay sleeps: 2 s of video at 4x
    now, sleeps = [0.0], []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    with RealtimeReplay(VideoFileSource(clip), 4.0, clock=lambda: now[0], sleep=sleep) as paced:
        stamps = [rec.timestamp for rec in paced]
    assert len(stamps) == 30 and paced.stats["late_frames"] == 0
    np.testing.assert_allclose(np.diff(stamps), 1 / 60, atol=1e-6)  # every frame at its pts / 4
    assert sum(sleeps) == pytest.approx(29 / 60, abs=1e-6)
    # the overlay keeps the recording's own timestamps, not the replay's
    pts = [float(f.time) for f in _decode(tmp_path / "out" / "overlay.mp4")]
    assert all(round(p * 15, 3) == int(round(p * 15)) for p in pts)
    with pytest.raises(SourceError, match="speed"):
        open_source(clip, realtime=True, speed=0)


def test_capture_warnings_reach_console_and_summary(tmp_path, capsys):
    src = CaptureSource(0, width=1920, height=1080, max_reconnects=0, open_fn=lambda d, a: DyingCapture(3))
    summary = StreamPipeline(FakeEngine(), src, tmp_path).run()
    assert any("requested 1920x1080, device delivers 64x48" in w for w in summary["warnings"])
    assert "device delivers 64x48" in capsys.readouterr().err
    assert not summary["complete"] and "lost" in summary["stop_reason"]


# --------------------------------------------------------------------------- outputs that survive


def test_signals_during_finalisation_cannot_interrupt_it(tmp_path, monkeypatch):
    original = StreamPipeline._close_sinks

    def slow_close(self):
        for _ in range(3):  # three signals while the sinks are being finalised
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        original(self)

    monkeypatch.setattr(StreamPipeline, "_close_sinks", slow_close)
    handler_before = signal.getsignal(signal.SIGINT)
    summary = StreamPipeline(FakeEngine(), PhantomSource(n_frames=12, width=96, height=96), tmp_path).run()
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored only after everything was written
    assert summary["interrupted_by"] == "SIGINT" and summary["finalised"]
    s = _strict_json(tmp_path / "summary.json")
    assert s["frames_out"] == 12 == len(_decode(tmp_path / "overlay.mp4"))
    assert (tmp_path / "latency.json").stat().st_size > 0


def test_repeated_sigint_mid_run_finalises(tmp_path):
    fired = []

    def progress(_n):
        if not fired:  # the run is under way: four signals in a row, from the writing thread itself
            for _ in range(4):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.02)
            fired.append(True)

    summary = StreamPipeline(FakeEngine(delay_s=0.01), PhantomSource(n_frames=500, width=96, height=96),
                             tmp_path, progress=progress).run()
    assert summary["interrupted_by"] == "SIGINT" and not summary["complete"] and summary["finalised"]
    assert "SIGINT" in summary["stop_reason"]
    assert len(_decode(tmp_path / "overlay.mp4")) == summary["frames_out"] > 0


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from fakes import DyingCapture, FakeEngine, SyntheticSource, rss_mb
    from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
    from textsam_eus.stream.sources import PhantomSource
    StreamPipeline(FakeEngine(delay_s=0.02), PhantomSource(n_frames=100000, width=160, height=120, fps=30),
                   {out!r}, PipelineConfig(masks={masks!r})).run()
""")


@pytest.mark.slow
@pytest.mark.parametrize("masks", ["video", "png"])
def test_sigkill_leaves_playable_outputs(tmp_path, masks):
    out = tmp_path / "out"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), out=str(out), masks=masks))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for about 4 s of video (60 frames written)
            if (out / "outputs.csv").exists() and len((out / "outputs.csv").read_text().splitlines()) > 60:
                break
            if proc.poll() is not None:
                pytest.fail(f"child exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    frames = _decode(out / "overlay.mp4")
    assert len(frames) >= 30  # everything up to the last complete one-second fragment plays
    s = _strict_json(out / "summary.json")
    assert s["complete"] is False and "killed" in s["stop_reason"]
    if masks == "video":
        assert len(list(read_mask_video(out / "masks.mkv"))) >= 30
    else:
        pngs = list((out / "masks").iterdir())
        assert len(pngs) >= 30 and not [p for p in pngs if p.suffix != ".png"]  # no half-written file
        assert all(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) is not None for p in pngs)
    assert len((out / "frames.jsonl").read_text().splitlines()) >= 30  # per-frame records kept on disk
    # the lock died with the process: a new run may use the folder (after --overwrite)
    with OutputFolder(out, overwrite=True):
        pass


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _noise(n):
    rng = np.random.default_rng(0)
    return SyntheticSource(n, lambda i: rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))


@pytest.mark.slow
def test_full_disk_ends_with_a_clear_message_and_finalised_files(tiny_disk):
    out = tiny_disk / "run"
    with pytest.raises(StreamError, match="no space left") as err:
        StreamPipeline(FakeEngine(), _noise(2000), out, PipelineConfig(disk_reserve_bytes=1 << 20)).run()
    assert "\n" not in str(err.value) and "free some space" in str(err.value)
    s = _strict_json(out / "summary.json")
    assert s["complete"] is False and s["stop_reason"].startswith("disk full") and s["finalised"]
    frames = _decode(out / "overlay.mp4")
    assert len(frames) > 10
    assert not list(out.rglob("*.part"))


# --------------------------------------------------------------------------- output folders


@pytest.mark.slow
def test_out_holding_earlier_results_is_refused_then_overwritten(tmp_path, capsys):
    from textsam_eus.model.checkpoint import save_checkpoint
    from textsam_eus.model.registry import build_textsam

    ckpt = str(save_checkpoint(build_textsam("tiny"), tmp_path / "m.safetensors"))
    out = tmp_path / "out"
    args = ["stream", "--source", "phantom:4", "--out", str(out), "--checkpoint", ckpt, "--engine", "torch",
            "--no-progress"]
    assert main(args + ["--max-frames", "3"]) == 0
    capsys.readouterr()
    before = (out / "summary.json").read_text()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "not empty" in err and len(err.strip().splitlines()) == 1
    assert (out / "summary.json").read_text() == before  # untouched
    (out / "notes.txt").write_text("mine")
    assert main(args + ["--overwrite", "--max-frames", "2"]) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["mask_000000.png", "mask_000001.png"]
    assert (out / "notes.txt").read_text() == "mine"  # only the earlier run's outputs are removed


def test_second_run_into_a_folder_in_use_is_refused(tmp_path):
    with OutputFolder(tmp_path / "busy"):
        with pytest.raises(OutputError, match="another textsam-eus run .* is writing"):
            StreamPipeline(FakeEngine(), PhantomSource(n_frames=2, width=64, height=64), tmp_path / "busy").run()


@pytest.mark.parametrize("problem", ["file", "too_long", "read_only"])
def test_bad_out_paths_are_one_line_errors(tmp_path, capsys, problem):
    if problem == "file":
        out = tmp_path / "taken"
        out.write_text("x")
        expect = "is a file"
    elif problem == "too_long":
        out = tmp_path / ("x" * 300)
        expect = "too long"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
        out = ro / "run"
        expect = "choose a folder you can write to"
    try:
        assert main(["stream", "--source", "phantom:2", "--out", str(out), "--engine", "torch"]) == 1
    finally:
        if problem == "read_only":
            subprocess.run(["umount", "-l", str(ro)], capture_output=True)
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_same_stem_videos_get_distinct_folders(tmp_path):
    from textsam_eus.model.checkpoint import save_checkpoint
    from textsam_eus.model.registry import build_textsam

    ckpt = str(save_checkpoint(build_textsam("tiny"), tmp_path / "m.safetensors"))
    videos = tmp_path / "videos"
    videos.mkdir()
    _write_clip(videos / "clip.mp4", n=4)
    _write_clip(videos / "clip.mkv", n=6)
    _write_clip(videos / "other.mp4", n=3)
    assert main(["stream", "--source", str(videos), "--out", str(tmp_path / "o"), "--checkpoint", ckpt,
                 "--engine", "torch", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["clip_mkv", "clip_mp4", "other"]
    assert len(_decode(tmp_path / "o" / "clip_mkv" / "overlay.mp4")) == 6
    assert len(_decode(tmp_path / "o" / "clip_mp4" / "overlay.mp4")) == 4


@pytest.mark.parametrize("extra, expect", [
    (["--width", "640"], "apply to capture devices only"),
    (["--max-frames", "0"], "--max-frames 0 is invalid"),
    (["--speed", "2"], "add --realtime"),
    (["--realtime", "--speed", "-1"], "--speed -1.0 is invalid"),
])
def test_bad_stream_options_are_one_line_errors(tmp_path, capsys, extra, expect):
    clip = _write_clip(tmp_path / "c.mp4", n=3)
    assert main(["stream", "--source", str(clip), "--out", str(tmp_path / "o"), "--engine", "torch"] + extra) == 1
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- inputs that change


@pytest.mark.parametrize("masks", ["png", "video"])
def test_resolution_change_mid_stream(tmp_path, masks):
    summary = StreamPipeline(FakeEngine(), SyntheticSource(10, lambda i: np.full((430 if i < 5 else 437, 512, 3), 90, np.uint8), fps=15.0), tmp_path,
                             PipelineConfig(masks=masks, temporal=True)).run()
    assert summary["complete"] and summary["frames_out"] == 10 and summary["size_changes"] == 1
    frames = _decode(tmp_path / "overlay.mp4")
    assert len(frames) == 10 and {(f.width, f.height) for f in frames} == {(512, 430)}  # letterboxed
    assert summary["outputs"]["video_letterboxed_frames"] == 5
    if masks == "png":
        shapes = [cv2.imread(str(tmp_path / "masks" / f"mask_{i:06d}.png"), 0).shape for i in range(10)]
        assert shapes == [(430, 512)] * 5 + [(437, 512)] * 5  # each mask at its own frame's size
    else:
        assert summary["outputs"]["masks"] == ["masks.mkv", "masks_seg001.mkv"]
        assert [m.shape for m in read_mask_video(tmp_path / "masks_seg001.mkv")] == [(437, 512)] * 5


def test_mixed_size_image_folder_named_after_files(tmp_path):
    folder = tmp_path / "stills"
    folder.mkdir()
    sizes = {"b_scan": (120, 90), "a_scan": (200, 150), "scan10": (64, 64), "scan2": (90, 120)}
    for stem, (w, h) in sizes.items():
        cv2.imwrite(str(folder / f"{stem}.png"), np.full((h, w), 80, np.uint8))
    (folder / "scan3.png").write_bytes(b"not a png")
    cv2.imwrite(str(folder / "a_scan.jpg"), np.full((30, 40), 80, np.uint8))  # same stem as a_scan.png
    out = tmp_path / "out"
    summary = StreamPipeline(FakeEngine(), open_source(folder), out).run()
    assert summary["frames_out"] == 5 and summary["unreadable_count"] == 1
    for stem, (w, h) in sizes.items():
        stem = "a_scan_png" if stem == "a_scan" else stem  # a_scan.png and a_scan.jpg share a stem
        assert cv2.imread(str(out / "masks" / f"{stem}.png"), 0).shape == (h, w)
        assert cv2.imread(str(out / "overlays" / f"{stem}.png")).shape == (h, w, 3)
    assert cv2.imread(str(out / "masks" / "a_scan_jpg.png"), 0).shape == (30, 40)
    rows = list(csv.DictReader((out / "outputs.csv").open()))
    by_file = {Path(r["source_file"]).name: r for r in rows}
    assert by_file["scan10.png"]["mask"] == "masks/scan10.png" and by_file["scan10.png"]["overlay"] == \
        "overlays/scan10.png"
    assert by_file["scan3.png"]["status"] == "unreadable" and by_file["scan3.png"]["mask"] == ""
    assert not (out / "overlay.mp4").exists()


def test_non_finite_results_still_write_valid_json(tmp_path):
    StreamPipeline(FakeEngine(iou=float("nan")), PhantomSource(n_frames=3, width=64, height=64), tmp_path).run()
    s = _strict_json(tmp_path / "summary.json")
    assert s["frames_out"] == 3
    _strict_json(tmp_path / "latency.json")


def test_summary_written_at_start_and_marked_complete_at_the_end(tmp_path):
    seen = {}

    def progress(_n):
        if "first" not in seen:
            seen["first"] = _strict_json(tmp_path / "summary.json")

    summary = StreamPipeline(FakeEngine(), PhantomSource(n_frames=4, width=64, height=64), tmp_path,
                             progress=progress).run()
    assert seen["first"]["complete"] is False and "running" in seen["first"]["stop_reason"]
    assert summary["complete"] and summary["stop_reason"] == "end of input" and summary["finalised"]
    for key in ("frames_in", "frames_out", "frames_dropped", "fps", "latency_ms", "stages_ms"):
        assert key in summary
    assert set(summary["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert not (tmp_path / "frames.jsonl").exists()  # folded into latency.json/csv


class _IndexEngine(FakeEngine):
    """Marks each frame's mask with as many pixels as the frame's number, after a random delay."""

    def __init__(self):
        super().__init__()
        self.rng = np.random.default_rng(0)
        self.threads = set()

    def segment(self, frame, **kwargs):
        import threading

        self.threads.add(threading.get_ident())
        time.sleep(float(self.rng.uniform(0, 0.01)))
        r = super().segment(frame, **kwargs)
        r.mask = np.zeros(frame.shape[:2], bool)
        r.mask.flat[: int(frame[0, 0, 0])] = True
        return r


def _numbered(n):
    return SyntheticSource(n, lambda i: np.full((48, 64, 3), i, np.uint8))


def test_parallel_workers_keep_frame_order(tmp_path):
    eng = _IndexEngine()
    summary = StreamPipeline(eng, _numbered(120), tmp_path, PipelineConfig(workers=2)).run()
    assert summary["workers"] == 2 and summary["frames_out"] == 120 and len(eng.threads) == 2
    rows = list(csv.DictReader((tmp_path / "outputs.csv").open()))
    assert [int(r["index"]) for r in rows] == list(range(120))
    assert [int(r["mask_area"]) for r in rows] == list(range(120))  # each mask stayed with its own frame
    assert len(_decode(tmp_path / "overlay.mp4")) == 120
    with pytest.raises(ValueError, match="workers=1"):
        PipelineConfig(workers=2, temporal=True)


def test_parallel_workers_stop_cleanly_on_an_engine_error(tmp_path):
    class Breaks(_IndexEngine):
        def segment(self, frame, **kw):
            if int(frame[0, 0, 0]) == 40:
                raise RuntimeError("worker failed")
            return super().segment(frame, **kw)

    with pytest.raises(RuntimeError, match="worker failed"):
        StreamPipeline(Breaks(), _numbered(200), tmp_path, PipelineConfig(workers=2)).run()
    s = _strict_json(tmp_path / "summary.json")
    assert not s["complete"] and s["finalised"] and "worker failed" in s["stop_reason"]
    assert len(_decode(tmp_path / "overlay.mp4")) == s["frames_out"] <= 40


def test_sigint_after_the_input_ended_still_marks_the_run_incomplete(tmp_path):
    fired = []

    def progress(_n):
        if not fired:  # the input has ended (--max-frames 8) by now; frames are still queued
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)  # the main thread handles it within its 0.1 s join
            fired.append(True)

    summary = StreamPipeline(FakeEngine(delay_s=0.1), PhantomSource(n_frames=20, width=64, height=64), tmp_path,
                             PipelineConfig(queue_size=8, max_frames=8), progress=progress).run()
    assert summary["frames_in"] == 8 and summary["frames_out"] < 8
    assert summary["complete"] is False and summary["stop_reason"] == "stopped by SIGINT" and summary["finalised"]
    assert len(_decode(tmp_path / "overlay.mp4")) == summary["frames_out"]

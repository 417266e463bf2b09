"""Tests of the streaming I/O layer: sources, sinks, overlay, ROI, latency report."""

from __future__ import annotations

import ast
import csv
import json
import sys
import time
import types
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from textsam_eus.stream.record import FrameRecord
from textsam_eus.stream.overlay import OverlayStyle, draw_overlay, parse_color
from textsam_eus.stream.base import SourceError, opencv_has_gstreamer
from textsam_eus.stream.sources.capture import CaptureSource
from textsam_eus.stream.sinks.encoders import MaskVideoEncoder, SinkError, VideoEncoder, read_mask_video
from textsam_eus.stream.sinks.report import LatencyReport
from textsam_eus.stream.roi import ROI, list_presets
from textsam_eus.stream.sinks import MaskPngSink
from textsam_eus.stream.sources import ImageFolderSource, PhantomSource, VideoFileSource, open_source
from textsam_eus.stream.view.window import DisplayUnavailableError, Window, opencv_has_gui

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "eus_clips"
STREAM_DIR = Path(__file__).resolve().parents[1] / "textsam_eus" / "stream"


def _frame(i: int, w: int, h: int) -> np.ndarray:
    """Deterministic RGB test frame: red level encodes i, a moving white block."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = (i * 8) % 256
    img[:, :, 1] = 150
    img[:, :, 2] = 60
    x = (i * 3) % max(1, w - 20)
    img[h // 4: h // 4 + 20, x:x + 20] = 255
    return img


def _write_clip(path, n, w, h, fps=15.0, pts=True, **kw) -> VideoEncoder:
    with VideoEncoder(path, fps, **kw) as sink:
        for i in range(n):
            sink.write(_frame(i, w, h), pts_seconds=(i / fps) if pts else None)
    return sink


# --------------------------------------------------------------------------- writer + reader


def test_mp4_roundtrip_odd_size_keeps_fps_and_pts(tmp_path):
    path = tmp_path / "odd.mp4"
    sink = _write_clip(path, 30, 130, 97, fps=15.0)
    # decision: odd sizes are padded right/bottom; the padding stays in the output
    assert sink.padding == (0, 1)
    assert sink.size == (130, 98) and sink.input_size == (130, 97)
    assert sink.frames_written == 30 and sink.closed

    with VideoFileSource(path) as src:
        assert src.size == (130, 98)
        assert src.fps == pytest.approx(15.0, abs=1e-6)
        assert src.is_live is False
        assert src.n_frames == 30
        frames = list(src)
    assert len(frames) == 30
    assert src.stats["decoded"] == 30 and src.stats["decode_errors"] == 0
    assert [f.index for f in frames] == list(range(30))
    for i, f in enumerate(frames):
        assert isinstance(f, FrameRecord)
        assert f.image.shape == (98, 130, 3) and f.image.dtype == np.uint8
        assert f.image.flags.c_contiguous
        assert f.source == str(path)
        # content survives (red level encodes the index), padding row is black
        assert abs(int(np.median(f.image[60:90, :, 0])) - (i * 8) % 256) <= 6
        luma = cv2.cvtColor(f.image, cv2.COLOR_RGB2GRAY)
        assert int(luma[97].max()) <= 45 and int(luma[60:96].min()) >= 85
    pts = np.array([f.pts for f in frames])
    assert np.all(np.diff(pts) > 0)
    np.testing.assert_allclose(pts - pts[0], np.arange(30) / 15.0, atol=1e-4)
    ts = [f.timestamp for f in frames]
    assert ts == sorted(ts)


def test_writer_without_pts_uses_frame_index(tmp_path):
    path = tmp_path / "idx.mp4"
    _write_clip(path, 8, 64, 48, fps=25.0, pts=False)
    with VideoFileSource(path) as src:
        assert src.fps == pytest.approx(25.0)
        pts = [f.pts for f in src]
    np.testing.assert_allclose(pts, np.arange(8) / 25.0, atol=1e-4)


def test_writer_non_increasing_pts_nudged_or_dropped(tmp_path):
    seq = [0.0, 1 / 15, 1 / 15, 0.05, 3 / 15, 4 / 15]
    nudge = tmp_path / "nudge.mp4"
    with VideoEncoder(nudge, 15) as s:
        results = [s.write(_frame(i, 64, 48), pts_seconds=p) for i, p in enumerate(seq)]
    assert all(results) and s.stats["pts_nudged"] == 2 and s.frames_written == 6
    with VideoFileSource(nudge) as src:
        pts = [f.pts for f in src]
    assert len(pts) == 6 and np.all(np.diff(pts) > 0)

    drop = tmp_path / "drop.mp4"
    with VideoEncoder(drop, 15, on_bad_pts="drop") as s:
        results = [s.write(_frame(i, 64, 48), pts_seconds=p) for i, p in enumerate(seq)]
    assert results == [True, True, False, False, True, True]
    assert s.stats["pts_dropped"] == 2 and s.frames_written == 4
    with VideoFileSource(drop) as src:
        assert sum(1 for _ in src) == 4


def test_writer_rejects_size_change_and_bad_args(tmp_path):
    with pytest.raises(SinkError, match="not available"):
        VideoEncoder(tmp_path / "x.mp4", 15, codec="no_such_codec")
    with pytest.raises(SinkError, match="fps"):
        VideoEncoder(tmp_path / "x.mp4", 0)
    with VideoEncoder(tmp_path / "y.mp4", 15) as s:
        s.write(_frame(0, 64, 48))
        with pytest.raises(SinkError, match="size changed"):
            s.write(_frame(1, 66, 48))
        with pytest.raises(SinkError, match="RGB"):
            s.write(np.zeros((48, 64, 4), np.uint8))


def test_sink_close_idempotent_and_finalises_after_exception(tmp_path):
    path = tmp_path / "crash.mp4"
    sink = VideoEncoder(path, 15)
    with pytest.raises(RuntimeError, match="boom"):
        with sink:
            for i in range(7):
                sink.write(_frame(i, 96, 64), pts_seconds=i / 15)
            raise RuntimeError("boom")
    assert sink.closed
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(SinkError, match="closed"):
        sink.write(_frame(0, 96, 64))
    # the moov atom was written: the MP4 reopens and every frame decodes
    with av.open(str(path)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == 7


# --------------------------------------------------------------------------- damaged files


def test_truncated_mpegts_yields_decodable_frames(tmp_path):
    full = tmp_path / "full.ts"
    _write_clip(full, 60, 160, 120)
    with VideoFileSource(full) as src:
        assert sum(1 for _ in src) == 60
    data = full.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2])
    with VideoFileSource(cut) as src:
        frames = list(src)
        with pytest.raises(StopIteration):
            next(src)
    assert 5 < len(frames) < 60
    assert src.stats["decoded"] == len(frames)
    assert np.all(np.diff([f.pts for f in frames]) > 0)


def test_corrupt_bytes_in_middle_of_mpegts(tmp_path):
    full = tmp_path / "full.ts"
    _write_clip(full, 60, 160, 120)
    d = bytearray(full.read_bytes())
    mid = len(d) // 2
    d[mid: mid + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.ts"
    bad.write_bytes(bytes(d))
    with VideoFileSource(bad) as src:
        frames = list(src)
    st = src.stats
    assert len(frames) > 30
    assert st["corrupt_packets"] + st["corrupt_frames"] + st["decode_errors"] >= 1, st
    assert all(f.image.shape == (120, 160, 3) for f in frames)


def test_bad_packets_are_skipped_and_counted(tmp_path):
    # MJPEG in AVI: zero two packets' payloads -> the decoder rejects exactly those packets
    path = tmp_path / "mj.avi"
    _write_clip(path, 20, 160, 120, codec="mjpeg", pix_fmt="yuvj420p", pts=False)
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    assert len(packets) == 20
    d = bytearray(path.read_bytes())
    for k in (5, 10):
        pos, size = packets[k]
        d[pos: pos + size] = bytes(size)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(d))
    with VideoFileSource(bad) as src:
        frames = list(src)
    assert len(frames) == 18
    assert src.stats["skipped_packets"] == 2
    assert src.stats["decode_errors"] == 2


def test_truncated_raw_h264_with_fps_override(tmp_path):
    raw = tmp_path / "clip.h264"
    _write_clip(raw, 30, 96, 64, pts=False)
    data = raw.read_bytes()
    cut = tmp_path / "cut.h264"
    cut.write_bytes(data[: len(data) // 2])
    with VideoFileSource(cut, fps=15) as src:
        assert src.fps == 15.0
        frames = list(src)
    assert 0 < len(frames) < 30
    np.testing.assert_allclose([f.pts for f in frames], np.arange(len(frames)) / 15.0)


def test_non_video_files_raise_source_error_at_open(tmp_path):
    assert issubclass(SourceError, ValueError)
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a video\n" * 20)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        t = np.arange(8000) / 8000
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None, :]
        fr = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        fr.sample_rate = 8000
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    cases = {
        text: "not a video",
        empty: "empty",
        audio: "no video stream",
        tmp_path / "missing.mp4": "not found",
        tmp_path: "folder",
    }
    for path, words in cases.items():
        with pytest.raises(SourceError) as ei:
            VideoFileSource(path)
        msg = str(ei.value)
        assert str(path) in msg and words in msg, msg
    with pytest.raises(SourceError, match="audio"):
        VideoFileSource(audio)


# --------------------------------------------------------------------------- capture


class FakeCapture:
    """cv2.VideoCapture stand-in: serves ``n_frames`` BGR frames (None = endless), then fails."""

    def __init__(self, opened=True, n_frames=None, start=0, w=64, h=48):
        self.opened, self.n_frames, self.start, self.w, self.h = opened, n_frames, start, w, h
        self.served = 0
        self.released = False
        self.props = {}

    def isOpened(self):
        return self.opened

    def read(self):
        if not self.opened or (self.n_frames is not None and self.served >= self.n_frames):
            return False, None
        img = np.zeros((self.h, self.w, 3), np.uint8)
        img[:, :, 0] = self.start + self.served  # blue channel carries the frame number
        img[:, :, 2] = 255                       # red in BGR order
        self.served += 1
        return True, img

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: self.w, cv2.CAP_PROP_FRAME_HEIGHT: self.h,
                cv2.CAP_PROP_FPS: 30.0}.get(prop, 0.0)

    def release(self):
        self.released = True
        self.opened = False


def _open_fn(script):
    """open_fn returning the captures of ``script`` in order (the last one repeats)."""
    calls = []

    def open_fn(device, api):
        cap = script[min(len(calls), len(script) - 1)]()
        calls.append((device, api, cap))
        return cap

    return open_fn, calls


def test_capture_reconnects_after_two_failed_attempts():
    script = [lambda: FakeCapture(n_frames=5),
              lambda: FakeCapture(opened=False),
              lambda: FakeCapture(opened=False),
              lambda: FakeCapture(n_frames=None, start=100)]
    open_fn, calls = _open_fn(script)
    sleeps = []
    src = CaptureSource(0, width=64, height=48, fps=30, max_reconnects=5, reconnect_delay=0.25,
                        open_fn=open_fn, sleep_fn=sleeps.append)
    assert src.is_live and src.size == (64, 48) and src.fps == 30.0
    first = calls[0][2]
    assert first.props[cv2.CAP_PROP_FRAME_WIDTH] == 64 and first.props[cv2.CAP_PROP_FPS] == 30
    with src:
        frames = [next(src) for _ in range(10)]
    assert [f.index for f in frames] == list(range(10))
    # BGR -> RGB: red=255 in channel 0, frame number in the blue channel
    assert all(int(f.image[0, 0, 0]) == 255 for f in frames)
    assert [int(f.image[0, 0, 2]) for f in frames] == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    assert all(f.pts is None for f in frames)
    st = src.stats
    assert st["reconnect_attempts"] == 3 and st["reconnects"] == 1 and st["lost"] is False
    assert sleeps == [0.25] * 3
    assert len(calls) == 4 and first.released
    assert calls[-1][2].released  # closed with the context manager


def test_capture_never_comes_back_stops_cleanly():
    script = [lambda: FakeCapture(n_frames=5), lambda: FakeCapture(opened=False)]
    open_fn, calls = _open_fn(script)
    sleeps = []
    with CaptureSource("/dev/video7", max_reconnects=3, reconnect_delay=0.01, open_fn=open_fn,
                       sleep_fn=sleeps.append) as src:
        frames = list(src)
        assert next(src, None) is None
    assert len(frames) == 5
    assert src.stats["lost"] is True
    assert src.stats["reconnect_attempts"] == 3 and src.stats["reconnects"] == 0
    assert sleeps == [0.01] * 3 and len(calls) == 1 + 3  # every wait went through sleep_fn: no real sleeping
    assert calls[0][1] == cv2.CAP_V4L2


def test_capture_close_from_another_thread():
    import threading

    open_fn, calls = _open_fn([lambda: FakeCapture(n_frames=None)])
    src = CaptureSource(1, open_fn=open_fn)
    got = []
    started = threading.Event()

    def reader():
        for f in src:
            got.append(f.index)
            started.set()
            time.sleep(0.001)

    th = threading.Thread(target=reader)
    th.start()
    assert started.wait(5)
    src.close()
    th.join(5)
    assert not th.is_alive() and len(got) >= 1
    assert calls[0][2].released and src.closed
    assert next(src, None) is None


def test_capture_open_failure_lists_attempts():
    open_fn, calls = _open_fn([lambda: FakeCapture(opened=False)])
    with pytest.raises(SourceError) as ei:
        CaptureSource(3, open_fn=open_fn)
    msg = str(ei.value)
    assert "3" in msg and "tried" in msg and "V4L2" in msg
    if sys.platform.startswith("linux"):
        assert "/dev/video" in msg and len(calls) == 2


def test_unknown_device_index_97_raises():
    with pytest.raises(SourceError, match="97"):
        CaptureSource(97, max_reconnects=0)
    with pytest.raises(SourceError, match="97"):
        open_source("97")


@pytest.mark.skipif(opencv_has_gstreamer(), reason="OpenCV here has GStreamer")
def test_gstreamer_pipeline_without_gstreamer_support():
    with pytest.raises(SourceError, match="GStreamer"):
        open_source("videotestsrc ! videoconvert ! appsink")


# --------------------------------------------------------------------------- folders, phantom, dispatch


def test_image_folder_source_converts_and_sorts(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    h, w = 40, 50
    gray = np.full((h, w), 77, np.uint8)
    bgra = np.zeros((h, w, 4), np.uint8)
    bgra[..., 2] = 200  # red
    bgra[..., 3] = 10
    deep = np.full((h, w, 3), 65535, np.uint16)
    bgr = np.zeros((h, w, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    cv2.imwrite(str(folder / "frame10.png"), gray)
    cv2.imwrite(str(folder / "frame2.png"), bgra)
    cv2.imwrite(str(folder / "frame1.tif"), deep)
    cv2.imwrite(str(folder / "frame3.bmp"), bgr)
    (folder / "readme.txt").write_text("ignored")
    (folder / "frame4.jpg").write_bytes(b"broken jpeg")
    with ImageFolderSource(folder, fps=10) as src:
        assert src.n_frames == 5 and src.size == (w, h) and src.fps == 10.0
        frames = list(src)
    assert [Path(f.file).name for f in frames] == ["frame1.tif", "frame2.png", "frame3.bmp",
                                                      "frame10.png"]
    assert src.stats["decode_errors"] == 1  # the broken jpeg is skipped
    for f in frames:
        assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
    assert tuple(frames[0].image[0, 0]) == (255, 255, 255)
    assert tuple(frames[1].image[0, 0]) == (200, 0, 0)
    assert tuple(frames[2].image[0, 0]) == (0, 0, 255)
    assert tuple(frames[3].image[0, 0]) == (77, 77, 77)
    # the index (and pts) is the file's place in the sorted list, so outputs keep matching their inputs
    assert [f.index for f in frames] == [0, 1, 2, 4] and [f.pts for f in frames] == [0.0, 0.1, 0.2, 0.4]
    assert [f.name for f in frames] == ["frame1", "frame2", "frame3", "frame10"]
    assert [Path(p).name for _, p in src.unreadable] == ["frame4.jpg"] and src.unreadable[0][0] == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images"):
        ImageFolderSource(empty)


def _fake_phantom_module():
    mod = types.ModuleType("textsam_eus.common.phantom")

    class PhantomConfig:
        def __init__(self, height=256, width=256):
            self.height, self.width = height, width

    class PhantomClip:
        def __init__(self, n_frames, seed, config=None, fps=15.0):
            self.n, self.cfg = n_frames, config or PhantomConfig()

        def __iter__(self):
            for i in range(self.n):
                img = np.full((self.cfg.height, self.cfg.width, 3), i, np.uint8)
                mask = np.zeros((self.cfg.height, self.cfg.width), np.uint8)
                mask[i: i + 5, 10:20] = 1
                yield img, mask

    mod.PhantomConfig, mod.PhantomClip = PhantomConfig, PhantomClip
    return mod


def test_phantom_source_with_stub_clip(monkeypatch):
    monkeypatch.setitem(sys.modules, "textsam_eus.common.phantom", _fake_phantom_module())
    src = open_source("phantom:4", width=40, height=30, fps=10.0)
    assert isinstance(src, PhantomSource)
    with src:
        assert src.size == (40, 30) and src.n_frames == 4 and not src.is_live
        for i, f in enumerate(src):
            assert f.image.shape == (30, 40, 3) and int(f.image[0, 0, 0]) == i
            assert f.pts == pytest.approx(i / 10.0)
            assert src.last_mask.shape == (30, 40) and src.last_mask[i, 10] == 1
    assert src.stats["decoded"] == 4


def test_phantom_source_real_clip():
    pytest.importorskip("textsam_eus.common.phantom")
    with PhantomSource(n_frames=3, seed=1, width=160, height=120) as src:
        frames = list(src)
        assert len(frames) == 3
        assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8
        assert src.last_mask.shape == (120, 160)
        assert set(np.unique(src.last_mask)) <= {0, 1}


def test_open_source_dispatch(tmp_path):
    clip = tmp_path / "c.mp4"
    _write_clip(clip, 3, 32, 32)
    with open_source(str(clip)) as s:
        assert isinstance(s, VideoFileSource)
    folder = tmp_path / "f"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with open_source(folder) as s:
        assert isinstance(s, ImageFolderSource)
    open_fn, calls = _open_fn([lambda: FakeCapture(n_frames=1)])
    with open_source("2", open_fn=open_fn) as s:
        assert isinstance(s, CaptureSource) and calls[0][0] == 2
    with open_source("/dev/video5", open_fn=open_fn) as s:
        assert isinstance(s, CaptureSource) and calls[-1][0] == "/dev/video5"
    with pytest.raises(SourceError) as ei:
        open_source(str(tmp_path / "nothing_here.mp4"))
    msg = str(ei.value)
    for form in ("video file", "folder of images", "/dev/video0", "GStreamer", "phantom:N"):
        assert form in msg
    with pytest.raises(SourceError, match="phantom"):
        open_source("phantom:abc")


# --------------------------------------------------------------------------- ROI


def test_roi_parse_preset_crop_paste_validate():
    r = ROI.parse(" 10, 20,30,40 ")
    assert (r.x, r.y, r.w, r.h) == (10, 20, 30, 40) and str(r) == "10,20,30,40"
    for bad in ("1,2,3", "a,b,c,d", "1,2,0,4", "-1,0,5,5", ""):
        with pytest.raises(ValueError):
            ROI.parse(bad)
    p = ROI.preset("eus800x600")
    assert (p.x, p.y, p.w, p.h) == (44, 56, 711, 457)
    assert ROI.parse("eus800x600") == p and "eus800x600" in list_presets()
    with pytest.raises(ValueError, match="eus800x600"):
        ROI.preset("nope")

    screen = np.arange(600 * 800 * 3, dtype=np.uint32).reshape(600, 800, 3)
    crop = p.crop(screen)
    assert crop.shape == (457, 711, 3) and np.shares_memory(crop, screen)
    np.testing.assert_array_equal(crop, screen[56:513, 44:755])

    m = np.ones((457, 711), np.uint8)
    full = p.paste((600, 800, 3), m)
    assert full.shape == (600, 800) and full.dtype == np.uint8
    assert full.sum() == m.sum() and full[56:513, 44:755].all()
    assert full[55].sum() == 0 and full[513].sum() == 0 and full[:, 43].sum() == 0
    with pytest.raises(ValueError, match="does not match"):
        p.paste((600, 800), np.ones((10, 10), np.uint8))

    with pytest.raises(SourceError) as ei:
        p.validate(640, 480)
    msg = str(ei.value)
    assert "44,56,711,457" in msg and "640x480" in msg and "--roi" in msg
    assert p.validate(800, 600) is p
    with pytest.raises(SourceError):
        p.crop(np.zeros((480, 640, 3), np.uint8))


# --------------------------------------------------------------------------- overlay


def _disk_mask(h, w, cx, cy, r):
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m


def test_overlay_changes_only_mask_and_contour():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    before = img.copy()
    mask = _disk_mask(120, 160, 90, 70, 25)
    style = OverlayStyle(hud=False)
    out = draw_overlay(img, mask, style)
    np.testing.assert_array_equal(img, before)  # input untouched
    assert out is not img and out.shape == img.shape and out.dtype == np.uint8
    changed = np.any(out != img, axis=2)
    near = cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
    assert not changed[~near].any()
    interior = cv2.erode(mask, np.ones((7, 7), np.uint8)).astype(bool)
    expected = np.round(img.astype(float) * 0.65 + np.array([255, 64, 64]) * 0.35)
    assert np.abs(out[interior].astype(float) - expected[interior]).max() <= 1
    # the contour is drawn in its colour on the boundary
    edge = mask.astype(bool) & ~cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
    assert np.mean(np.all(np.abs(out[edge].astype(int) - (255, 255, 0)) <= 60, axis=1)) > 0.5

    # empty / None mask -> identical copy
    np.testing.assert_array_equal(draw_overlay(img, np.zeros((120, 160), bool), style), img)
    np.testing.assert_array_equal(draw_overlay(img, None, style), img)
    with pytest.raises(ValueError, match="shape"):
        draw_overlay(img, np.zeros((10, 10), np.uint8), style)


def test_overlay_hud_in_corner_only():
    img = np.full((200, 300, 3), 128, np.uint8)
    out = draw_overlay(img, None, OverlayStyle(), hud_lines=["fps 15.0", "latency 42 ms", "trt"])
    changed = np.any(out != img, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.size > 0 and ys.max() < 100 and xs.max() < 150
    off = draw_overlay(img, None, OverlayStyle(hud=False), hud_lines=["fps"])
    np.testing.assert_array_equal(off, img)


def test_overlay_style_validation_and_colours():
    assert parse_color("#ff4040") == (255, 64, 64)
    assert parse_color("#F44") == (255, 68, 68)
    assert parse_color("red") == (255, 0, 0)
    assert parse_color("255,64,64") == (255, 64, 64)
    assert parse_color((1, 2, 3)) == (1, 2, 3)
    for bad in ("#12345", "notacolour", "256,0,0", "1,2", (1, 2), (0, 0, 300), (0.5, 0, 0)):
        with pytest.raises(ValueError):
            parse_color(bad)
    assert OverlayStyle(fill_color="#00ff00").fill_color == (0, 255, 0)
    for kw, field in [({"fill_color": (0, 0, 256)}, "fill_color"),
                      ({"contour_color": "bogus"}, "contour_color"),
                      ({"hud_color": (1, 2)}, "hud_color"),
                      ({"fill_alpha": 1.5}, "fill_alpha"),
                      ({"fill_alpha": -0.1}, "fill_alpha"),
                      ({"contour_thickness": -1}, "contour_thickness")]:
        with pytest.raises(ValueError, match=field):
            OverlayStyle(**kw)


def test_overlay_800x600_with_hud_repeats_exactly():
    """The overlay of a full 800x600 screen (its time per frame is the stream benchmark's ``overlay`` stage):
    mask and HUD drawn, the input untouched, and every call the same (no state left from the previous one)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    before = img.copy()
    mask = _disk_mask(600, 800, 400, 300, 150)
    style = OverlayStyle()
    hud = ["fps 15.0", "latency 45.1 ms", "engine trt-fp16"]
    first = draw_overlay(img, mask, style, hud)
    for _ in range(3):
        np.testing.assert_array_equal(draw_overlay(img, mask, style, hud), first)
    np.testing.assert_array_equal(img, before)
    changed = np.any(first != img, axis=2)
    near = cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
    assert changed[mask.astype(bool)].mean() > 0.99  # the fill covers the mask
    hud_only = changed & ~near
    ys, xs = np.nonzero(hud_only)
    assert ys.size > 0 and ys.max() < 100 and xs.max() < 300  # the HUD, top left, and nothing else


# --------------------------------------------------------------------------- masks


def test_mask_video_lossless_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    masks = [rng.random((61, 83)) > 0.6 for _ in range(12)]  # odd size, noisy: worst case
    path = tmp_path / "masks.mkv"
    with MaskVideoEncoder(path, 15) as sink:
        for i, m in enumerate(masks):
            sink.write(m.astype(np.uint8) if i % 2 else m, pts_seconds=i / 15)
    back = list(read_mask_video(path))
    assert len(back) == 12
    for m, b in zip(masks, back):
        assert b.shape == (61, 83) and b.dtype == np.uint8
        np.testing.assert_array_equal(b, m.astype(np.uint8) * 255)


def test_mask_png_sink_names_by_index_or_file_stem(tmp_path):
    sink = MaskPngSink(tmp_path)
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 5:15] = 1
    records = [FrameRecord(0, None, 0.0, None, "v"), FrameRecord(7, None, 0.0, None, "v"),
               FrameRecord(8, None, 0.0, None, "d", file="d/scan 3.tif", name="scan 3")]
    for rec, mask in zip(records, (m, m.astype(bool), m * 3)):
        rec.mask = mask
        sink.write(rec)
    assert [r.info["outputs"]["mask"] for r in records] == ["masks/mask_000000.png", "masks/mask_000007.png",
                                                            "masks/scan 3.png"]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["mask_000000.png", "mask_000007.png",
                                                                     "scan 3.png"]  # no .part left
    back = cv2.imread(str(tmp_path / "masks" / "mask_000007.png"), cv2.IMREAD_UNCHANGED)
    assert back.shape == (20, 30) and set(np.unique(back)) == {0, 255}
    np.testing.assert_array_equal(back, m * 255)


# --------------------------------------------------------------------------- latency report


def test_latency_report_percentiles_json_csv(tmp_path):
    t = [100.0]
    rep = LatencyReport("run", clock=lambda: t[0])
    rng = np.random.default_rng(5)
    infer = rng.gamma(4.0, 5.0, 200)
    pre = rng.random(200)
    e2e = infer + pre + 10
    for i in range(200):
        t[0] += 0.05
        rep.add({"index": i, "latency_ms": e2e[i], "stages": {"preprocess": pre[i]}},
                infer=infer[i], engine="trt")
    for i in range(200, 210):
        t[0] += 0.05
        rep.add(index=i, dropped=True, latency_ms=999.0, preprocess=0.5)
    rep.stop()
    s = rep.summary()
    assert s["frames_processed"] == 200 and s["frames_dropped"] == 10
    assert s["wall_time_s"] == pytest.approx(210 * 0.05)
    assert s["fps"] == pytest.approx(200 / (210 * 0.05))
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert s["latency_ms"][key] == pytest.approx(np.percentile(e2e, q))
        assert s["stages_ms"]["infer"][key] == pytest.approx(np.percentile(infer, q))
    assert s["latency_ms"]["max"] == pytest.approx(e2e.max())  # dropped excluded
    assert s["latency_ms"]["mean"] == pytest.approx(e2e.mean())
    pre_all = np.concatenate([pre, np.full(10, 0.5)])
    assert s["stages_ms"]["preprocess"]["p95"] == pytest.approx(np.percentile(pre_all, 95))
    assert "end-to-end" in rep.format_summary()

    jp, cp = tmp_path / "out" / "lat.json", tmp_path / "out" / "lat.csv"
    rep.write(json_path=jp, csv_path=cp)
    data = json.loads(jp.read_text())
    assert data["summary"]["frames_dropped"] == 10 and len(data["frames"]) == 210
    assert data["frames"][3]["infer"] == pytest.approx(infer[3])
    assert data["frames"][3]["engine"] == "trt"
    rows = list(csv.DictReader(cp.open()))
    assert len(rows) == 210
    assert {"index", "dropped", "latency_ms", "preprocess", "infer"} <= set(rows[0])
    assert float(rows[10]["latency_ms"]) == pytest.approx(e2e[10])
    assert rows[205]["infer"] == "" and rows[205]["dropped"] == "True"


def test_latency_report_empty():
    s = LatencyReport().summary()
    assert s["frames_processed"] == 0 and s["latency_ms"]["p50"] is None and s["fps"] is None


# --------------------------------------------------------------------------- window, imports


@pytest.mark.skipif(opencv_has_gui(), reason="OpenCV here has a GUI")
def test_window_sink_headless_message():
    with pytest.raises(DisplayUnavailableError, match="opencv-python"):
        Window("x")
    w = Window("x", strict=False)
    assert w.available is False and w.show(np.zeros((4, 4, 3), np.uint8)) is False
    w.close()


def _imports_with_nesting(path: Path):
    """(module, nested) for every import of ``path``, relative ones resolved; nested: inside a function/class."""
    package = ".".join(("textsam_eus", "stream", *path.relative_to(STREAM_DIR).parent.parts))
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, id(node) not in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, id(node) not in top


def test_stream_io_modules_do_not_import_heavy_packages():
    """Every stream module, relative imports included: no torch, train, engines or heavy model modules (only
    the torch-free ones of LIGHT_MODEL_MODULES); the phantom only lazily inside PhantomSource."""
    from test_layout import LIGHT_MODEL_MODULES

    banned = ("torch", "textsam_eus.train", "textsam_eus.engines", "textsam_eus.model")
    names = sorted(p.relative_to(STREAM_DIR).as_posix() for p in STREAM_DIR.rglob("*.py"))
    assert {"pipeline.py", "sources/files.py", "sinks/base.py", "record.py", "sources/replay.py",
            "sources/av_live.py", "base.py", "sources/capture.py", "sinks/encoders.py", "outdir.py", "overlay.py",
            "sinks/report.py", "roi.py", "stages/base.py", "stages/write.py", "view/window.py",
            "view/live_view.py"} <= set(names)
    bad, seen = [], set()
    for name in names:
        for mod, nested in _imports_with_nesting(STREAM_DIR / name):
            seen.add(mod)
            light = any(mod == m or mod.startswith(m + ".") for m in LIGHT_MODEL_MODULES)
            if any(mod == b or mod.startswith(b + ".") for b in banned) and not light:
                bad.append(f"{name} imports {mod}")
            if mod == "textsam_eus.common.phantom" and not nested:
                bad.append(f"{name} imports the phantom at module level")
    assert not bad, bad
    assert "textsam_eus.model.errors" in seen and "textsam_eus.common.screen" in seen  # relative imports resolved


# --------------------------------------------------------------------------- real clips


@pytest.mark.skipif(not (CLIPS / "cancer_v1.mp4").exists(), reason="EUS clips not available")
def test_real_eus_clip_decodes_and_crops():
    with VideoFileSource(CLIPS / "cancer_v1.mp4") as src:
        assert src.size == (800, 600)
        assert src.fps == pytest.approx(15.0, abs=0.05)
        frames = list(src)
    assert len(frames) == 50 and src.stats["decode_errors"] == 0
    roi = ROI.preset("eus800x600").validate(*src.size)
    for f in frames[:5]:
        assert f.image.shape == (600, 800, 3)
        assert roi.crop(f.image).shape == (457, 711, 3)
    assert np.all(np.diff([f.pts for f in frames]) > 0)

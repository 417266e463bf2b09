"""Nothing lost on a user mistake (issue 17): ``--overwrite`` removes only what a run recorded as its own, output
names are unique by construction, every user-given count is bounded and a stop request ends the run in bounded
time, ``complete`` means every frame was written, and the smaller edges (tiny stills, the lock before the model,
no reserve file left, warnings in one line and in ``summary.json``, DICOM files without frames)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import unicodedata
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from fakes import FakeEngine, SyntheticSource

from textsam_eus.cli import main
from textsam_eus.stream import outdir
from textsam_eus.stream.outdir import OutputError, OutputFolder, check_out_dir
from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
from textsam_eus.stream.sources import ImageFolderSource, PhantomSource, open_source, unique_stems

TESTS = Path(__file__).resolve().parent


def _decode_count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(capsys, argv, *needles) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from textsam_eus.model.checkpoint import save_checkpoint
    from textsam_eus.model.registry import build_textsam

    return str(save_checkpoint(build_textsam("tiny"), tmp_path_factory.mktemp("ckpt") / "m.safetensors"))


def _stream(ckpt, source, out, *extra):
    return ["stream", "--source", str(source), "--out", str(out), "--checkpoint", ckpt, "--engine", "torch",
            "--no-progress", "--no-report", *extra]


def _phantom(n=3):
    return PhantomSource(n_frames=n, width=64, height=64)


# ===================================================================== 1. --overwrite removes only our own files


def test_overwrite_never_deletes_the_input_inside_out(tmp_path, capsys, ckpt):
    pydicom = pytest.importorskip("pydicom")  # noqa: F841
    from dicom_fakes import make_us_dicom, moving_disc_frames

    study = tmp_path / "study"
    (study / "dicom").mkdir(parents=True)
    cine = study / "dicom" / "cine.dcm"
    make_us_dicom(cine, moving_disc_frames(3))
    before = _sha(cine)
    _one_line_error(capsys, _stream(ckpt, cine, study, "--overwrite"), "dicom/", "--overwrite")
    assert _sha(cine) == before and sorted(p.name for p in study.iterdir()) == ["dicom"]
    # the same at the library level (no earlier run recorded dicom/ as its own)
    with pytest.raises(OutputError, match="dicom/"):
        StreamPipeline(FakeEngine(), open_source(str(cine)), study, PipelineConfig(overwrite=True)).run()
    assert _sha(cine) == before


def test_overwrite_leaves_a_users_own_masks_folder(tmp_path):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    mine = out / "masks" / "mask_000000.png"  # same name as a run's first mask
    cv2.imwrite(str(mine), np.full((8, 8), 7, np.uint8))
    before = _sha(mine)
    with pytest.raises(OutputError) as err:
        StreamPipeline(FakeEngine(), _phantom(), out, PipelineConfig(overwrite=True)).run()
    msg = str(err.value)
    assert "\n" not in msg and "masks/" in msg and "choose another" in msg
    assert _sha(mine) == before and sorted(p.name for p in out.iterdir()) == ["masks"]


def test_overwrite_removes_exactly_what_the_earlier_run_listed(tmp_path):
    out = tmp_path / "out"
    StreamPipeline(FakeEngine(), _phantom(4), out, PipelineConfig(masks="png,video")).run()
    listed = [json.loads(line) for line in (out / outdir.MANIFEST_NAME).read_text().splitlines()[1:]]
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert on_disk <= {e.rstrip("/") for e in listed}  # every file the run wrote is listed
    (out / "notes.txt").write_text("mine")  # not a run output: stays
    summary = StreamPipeline(FakeEngine(), _phantom(2), out, PipelineConfig(overwrite=True)).run()
    assert summary["complete"] and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["mask_000000.png", "mask_000001.png"]
    assert not (out / "masks.mkv").exists()  # the first run's, removed

    # a user's file put into the run's masks/ is not listed: --overwrite refuses rather than mixing or deleting it
    cv2.imwrite(str(out / "masks" / "edited.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(OutputError, match="masks/"):
        StreamPipeline(FakeEngine(), _phantom(2), out, PipelineConfig(overwrite=True)).run()
    assert (out / "masks" / "edited.png").exists() and (out / "masks" / "mask_000000.png").exists()


def test_a_tampered_manifest_never_removes_anything_outside_out(tmp_path):
    out = tmp_path / "out"
    StreamPipeline(FakeEngine(), _phantom(2), out).run()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "x.png").write_text("keep")
    with open(out / outdir.MANIFEST_NAME, "a") as f:
        for rel in ("../victim.txt", str(victim), "link/x.png", "link/", "masks/../../victim.txt"):
            f.write(json.dumps(rel) + "\n")
        f.write('"half-writ')  # a line cut by a SIGKILL
    StreamPipeline(FakeEngine(), _phantom(2), out, PipelineConfig(overwrite=True)).run()
    assert victim.read_text() == "keep" and (tmp_path / "elsewhere" / "x.png").read_text() == "keep"


def test_overwrite_refuses_when_the_input_is_an_earlier_output(tmp_path):
    out = tmp_path / "out"
    folder = tmp_path / "stills"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"s{i}.png"), np.full((32, 32), 90, np.uint8))
    StreamPipeline(FakeEngine(), open_source(str(folder)), out).run()
    # re-segment the earlier run's own masks/ into the same --out: removing them would delete the input
    with pytest.raises(OutputError, match="--source"):
        StreamPipeline(FakeEngine(), open_source(str(out / "masks")), out, PipelineConfig(overwrite=True)).run()
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["s0.png", "s1.png"]
    with pytest.raises(OutputError, match="--source"):
        check_out_dir(out, overwrite=True, protect=[out / "masks" / "s0.png"])


def test_the_cli_refuses_a_clash_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import textsam_eus.runs.engine as eng

    monkeypatch.setattr(eng, "make_engine", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "a.png").write_bytes(b"mine")
    _one_line_error(capsys, _stream("m.safetensors", "phantom:2", out, "--overwrite"), "masks/")
    assert (out / "masks" / "a.png").read_bytes() == b"mine"


# ===================================================================== 2. names unique by construction


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


ADVERSARIAL = ["a.png", "a.jpg", "a_png.png", "A.png", "a.PNG", "a_png_2.png", "x.y.png", "x.y.jpg", "x_y.png",
               unicodedata.normalize("NFC", "ü.png"), unicodedata.normalize("NFD", "ü.png"), "..png", "...png",
               ".hidden.png", "b.tif", "B.TIFF"]


def test_unique_stems_are_unique_by_construction():
    rng = np.random.default_rng(0)
    pool = ADVERSARIAL + ["clip.mp4", "clip.mkv", "clip_mp4.mp4", "clip_mp4_2.mkv", "CLIP.MP4", "c.l.i.p.mp4"]
    for _ in range(200):
        names = list(rng.choice(pool, size=int(rng.integers(1, len(pool))), replace=False))
        stems = unique_stems([Path(n) for n in names])
        keys = [_key(s) for s in stems.values()]
        assert len(set(keys)) == len(names), stems
        for s in stems.values():
            assert s and s.strip(".") and "/" not in s and len(s.encode()) <= 200
    # a file whose own stem is unique keeps it
    stems = unique_stems([Path("a.png"), Path("a.jpg"), Path("a_png.png")])
    assert stems[Path("a_png.png")] == "a_png" and len({_key(s) for s in stems.values()}) == 3


def test_image_folder_with_clashing_names_writes_one_mask_per_input(tmp_path):
    folder = tmp_path / "stills"
    folder.mkdir()
    sizes = {}
    for i, name in enumerate(ADVERSARIAL):
        if name.lower().endswith((".tif", ".tiff")):
            ok, buf = cv2.imencode(".tif", np.full((20 + i, 30 + i), 80, np.uint8))
        else:
            ok, buf = cv2.imencode(Path(name).suffix.lower() if name.lower().endswith(".jpg") else ".png",
                                   np.full((20 + i, 30 + i), 80, np.uint8))
        buf.tofile(str(folder / name))
        sizes[name] = (20 + i, 30 + i)  # a size of its own: the mask shows which input it came from
    if len(list(folder.iterdir())) != len(ADVERSARIAL):
        pytest.skip("this file system folds case or unicode forms")
    out = tmp_path / "out"
    summary = StreamPipeline(FakeEngine(), open_source(str(folder)), out).run()
    assert summary["frames_out"] == len(ADVERSARIAL) and summary["complete"]
    rows = list(csv.DictReader((out / "outputs.csv").open(encoding="utf-8")))
    assert len(rows) == len(ADVERSARIAL)
    masks = [r["mask"] for r in rows]
    assert len({_key(m) for m in masks}) == len(masks)  # two inputs never share a mask file
    for r in rows:
        name = Path(r["source_file"]).name
        buf = np.fromfile(str(out / r["mask"]), np.uint8)
        assert cv2.imdecode(buf, 0).shape == sizes[name], name
        assert (out / r["overlay"]).exists()


@pytest.mark.slow
def test_video_folder_with_clashing_names_runs_every_video(tmp_path, ckpt):
    from textsam_eus.commands.stream import plan_jobs
    from textsam_eus.stream.sinks.encoders import VideoEncoder

    videos = tmp_path / "videos"
    videos.mkdir()
    counts = {"clip.mp4": 2, "clip.mkv": 3, "clip_mp4.mp4": 4}
    for name, n in counts.items():
        with VideoEncoder(videos / name, 15.0) as enc:
            for i in range(n):
                enc.write(np.full((48, 64, 3), 40 * i, np.uint8), i / 15)
    jobs = plan_jobs(str(videos), tmp_path / "o")
    assert len({_key(o.name) for _, o in jobs}) == 3
    argv = _stream(ckpt, videos, tmp_path / "o")
    for extra in ([], ["--overwrite"]):
        assert main(argv + extra) == 0
        for spec, o in jobs:
            assert _decode_count(o / "overlay.mp4") == counts[Path(spec).name]
            assert Path(json.loads((o / "summary.json").read_text())["source"]).name == Path(spec).name


# ===================================================================== 3. bounded counts, bounded stops


@pytest.mark.parametrize("extra, expect", [
    (["--iterations", "1000000000"], "--iterations 1000000000 is invalid"),
    (["--iterations", "-1"], "--iterations -1 is invalid"),
    (["--workers", "100000"], "--workers 100000 is invalid"),
    (["--threads", "0"], "--threads 0 is invalid"),
    (["--max-frames", "1000000000000"], "--max-frames 1000000000000 is invalid"),
    (["--fps", "1e9"], "--fps 1000000000.0 is invalid"),
    (["--realtime", "--speed", "1e-9"], "--speed 1e-09 is invalid"),
    (["--width", "100000"], "--width 100000 is invalid"),
    (["--show-after", "0"], "--show-after 0 is invalid"),
    (["--hide-after", "100000000"], "--hide-after 100000000 is invalid"),
    (["--presence-threshold", "nan"], "--presence-threshold nan is invalid"),
])
def test_every_count_is_bounded_before_any_work(tmp_path, capsys, monkeypatch, extra, expect):
    import textsam_eus.runs.engine as eng

    monkeypatch.setattr(eng, "make_engine", lambda *a, **k: pytest.fail("the model was loaded"))
    _one_line_error(capsys, _stream("m.safetensors", "phantom:2", tmp_path / "o", *extra), expect)
    assert not (tmp_path / "o").exists()


def test_library_bounds_on_iterations():
    from textsam_eus.core.errors import OptionError

    with pytest.raises(OptionError, match="iterations=1000000000"):
        PipelineConfig(iterations=10 ** 9)
    with pytest.raises(OptionError, match="workers=100000"):
        PipelineConfig(workers=100000)


def test_a_bundle_with_absurd_refine_iterations_is_refused(tmp_path):
    from textsam_eus.model.bundle import BundleError, _check_values
    from types import SimpleNamespace

    good = dict(image_size=256, embedding_shape=[1, 32, 16, 16], lowres_size=64, pixel_mean=[1, 2, 3],
                pixel_std=[1, 1, 1], mask_threshold=0.0, refine_iterations=2, presence_threshold=None,
                presence_show_frames=3, presence_hide_frames=5, resize="area", prompt_tokens=[[0.0] * 32])
    _check_values(SimpleNamespace(**good), tmp_path / "bundle.json")
    for field, value in (("refine_iterations", 10 ** 9), ("presence_show_frames", 10 ** 9),
                         ("presence_hide_frames", 10 ** 9)):
        with pytest.raises(BundleError, match=f"{field} is {value}"):
            _check_values(SimpleNamespace(**{**good, field: value}), tmp_path / "bundle.json")


class _StuckEngine(FakeEngine):
    """An engine call that does not return (a billion refinement passes, a hung driver) until released."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def segment(self, frame, **kwargs):
        if len(self.calls) >= 2:
            self.entered.set()
            self.release.wait(120)
        return super().segment(frame, **kwargs)


@pytest.mark.slow
def test_a_stop_request_ends_the_run_while_the_engine_is_stuck(tmp_path):
    engine = _StuckEngine()
    threading.Thread(target=lambda: (engine.entered.wait(30), time.sleep(0.2),
                                     os.kill(os.getpid(), signal.SIGTERM)), daemon=True).start()
    t = time.monotonic()
    try:
        summary = StreamPipeline(engine, _phantom(50), tmp_path, PipelineConfig(stop_timeout_s=1.0)).run()
    finally:
        engine.release.set()
    assert time.monotonic() - t < 15
    assert summary["complete"] is False and summary["finalised"] and summary["interrupted_by"] == "SIGTERM"
    assert any("did not stop" in w for w in summary["warnings"])
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["complete"] is False and "running" not in s["stop_reason"]
    assert _decode_count(tmp_path / "overlay.mp4") == s["frames_out"] == 2


STUCK_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from fakes import FakeEngine
    from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
    from textsam_eus.stream.sources import PhantomSource

    class Stuck(FakeEngine):
        def segment(self, frame, **kw):
            if self.calls:
                print("stuck", flush=True)
                while True:  # never returns
                    time.sleep(0.01)
            return super().segment(frame, **kw)

    s = StreamPipeline(Stuck(), PhantomSource(n_frames=50, width=64, height=64), {out!r},
                       PipelineConfig(stop_timeout_s=1.0)).run()
    sys.exit(130 if s["interrupted_by"] and not s["complete"] else 0)
""")


@pytest.mark.slow
def test_sigterm_exits_the_process_while_the_engine_is_stuck(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(STUCK_CHILD.format(tests=str(TESTS), out=str(tmp_path / "out")))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"stuck"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["complete"] is False


# ===================================================================== 4. "complete" means every frame written


@pytest.mark.parametrize("damage", ["truncated", "frames_overstated"])
def test_a_dicom_with_missing_frames_is_not_complete(tmp_path, capsys, damage):
    pydicom = pytest.importorskip("pydicom")
    from dicom_fakes import make_us_dicom, moving_disc_frames

    path = tmp_path / "cine.dcm"
    make_us_dicom(path, moving_disc_frames(10))
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) - 6 * 96 * 128 * 3])  # 4 of the 10 frames are left
        read = 4
    else:
        ds = pydicom.dcmread(path)
        ds.NumberOfFrames = 14
        ds.save_as(path)
        read = 10
    summary = StreamPipeline(FakeEngine(), open_source(str(path)), tmp_path / "o").run()
    assert summary["frames_out"] == read and summary["complete"] is False
    assert f"{read} of the" in summary["stop_reason"]
    assert any(f"{read} of the" in w for w in summary["warnings"])
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["complete"] is False
    assert f"{read} of the" in capsys.readouterr().err


@pytest.mark.slow
def test_a_signal_after_every_frame_was_written_leaves_the_run_complete(tmp_path, monkeypatch, capsys, ckpt):
    original = StreamPipeline._close_sinks

    def close_with_a_late_signal(self):
        os.kill(os.getpid(), signal.SIGINT)  # every frame is written; only finalisation is left
        time.sleep(0.05)
        original(self)

    monkeypatch.setattr(StreamPipeline, "_close_sinks", close_with_a_late_signal)
    summary = StreamPipeline(FakeEngine(), _phantom(5), tmp_path / "a").run()
    assert summary["complete"] is True and summary["frames_out"] == 5 and summary["interrupted_by"] == "SIGINT"
    assert main(_stream(ckpt, "phantom:3", tmp_path / "b")) == 0


def test_a_signal_that_stops_the_input_leaves_the_run_incomplete(tmp_path):
    fired = []

    def progress(_n):
        if not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)

    summary = StreamPipeline(FakeEngine(delay_s=0.02), _phantom(200), tmp_path, progress=progress).run()
    assert summary["complete"] is False and summary["stop_reason"] == "stopped by SIGINT"


def test_a_stop_keeps_the_frames_already_queued_for_a_slow_writer():
    from textsam_eus.stream.stages import END, FifoQueue

    q, stop, got = FifoQueue(2), threading.Event(), []
    q.put(1, stop)
    q.put(2, stop)
    stop.set()  # e.g. the engine failed on a later frame: what was segmented before is still written

    def slow_writer():
        time.sleep(0.3)
        got.extend(iter(q.get, END))

    t = threading.Thread(target=slow_writer)
    t.start()
    q.put(3, stop)
    q.put(END, stop)
    t.join(5)
    assert got == [1, 2, 3]


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("masks", ["png", "video"])
def test_a_full_disk_reports_only_what_was_really_written(small_disk, masks):
    from textsam_eus.stream.sinks.encoders import read_mask_video
    from textsam_eus.stream.pipeline import StreamError

    rng = np.random.default_rng(0)
    out = small_disk / "run"
    with pytest.raises(StreamError, match="no space left"):
        StreamPipeline(FakeEngine(), SyntheticSource(3000, lambda i: rng.integers(0, 255, (240, 320, 3), np.uint8)),
                       out, PipelineConfig(masks=masks, disk_reserve_bytes=1 << 20)).run()
    s = json.loads((out / "summary.json").read_text())
    frames = _decode_count(out / "overlay.mp4")
    rows = list(csv.DictReader((out / "outputs.csv").open()))
    assert frames > 10 and s["outputs"]["video_frames"] == frames
    assert sum(1 for r in rows if r["overlay"]) == frames  # outputs.csv claims no overlay frame that is not there
    if masks == "video":
        n_masks = len(list(read_mask_video(out / "masks.mkv")))
        assert sum(1 for r in rows if r["mask"]) == n_masks
    else:
        assert all((out / r["mask"]).exists() for r in rows if r["mask"])
    assert not list(out.rglob("*.part"))


# ===================================================================== 5. a still smaller than 8x8 is skipped


def test_a_tiny_still_among_good_ones_is_listed_and_skipped(tmp_path, capsys, ckpt):
    folder = tmp_path / "stills"
    folder.mkdir()
    for name, side in (("a.png", 64), ("b_tiny.png", 4), ("c.png", 48)):
        cv2.imwrite(str(folder / name), np.full((side, side), 90, np.uint8))
    summary = StreamPipeline(FakeEngine(), open_source(str(folder)), tmp_path / "o").run()
    assert summary["frames_out"] == 2 and summary["complete"] and summary["unreadable_count"] == 1
    rows = {Path(r["source_file"]).name: r for r in csv.DictReader((tmp_path / "o" / "outputs.csv").open())}
    assert "too small" in rows["b_tiny.png"]["status"] and rows["b_tiny.png"]["mask"] == ""
    assert any("b_tiny.png" in w and "too small" in w for w in summary["warnings"])
    assert main(_stream(ckpt, folder, tmp_path / "cli")) == 0


# ===================================================================== 6. smaller edges


def test_a_locked_out_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import textsam_eus.runs.engine as eng

    monkeypatch.setattr(eng, "make_engine", lambda *a, **k: pytest.fail("the model was loaded"))
    with OutputFolder(tmp_path / "busy"):
        _one_line_error(capsys, _stream("m.safetensors", "phantom:2", tmp_path / "busy"), "another textsam-eus run")
    with OutputFolder(tmp_path / "busy2"), pytest.raises(OutputError, match="another textsam-eus run"):
        check_out_dir(tmp_path / "busy2")


def test_no_reserve_file_is_ever_left_in_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / outdir.RESERVE_NAME).write_bytes(b"\0" * (4 << 20))  # left by a killed run of an earlier version
    seen = []
    StreamPipeline(FakeEngine(), _phantom(3), out,
                   progress=lambda _n: seen.append(sorted(p.name for p in out.iterdir()))).run()
    assert not (out / outdir.RESERVE_NAME).exists()
    assert all(outdir.RESERVE_NAME not in names for names in seen)  # held open, unlinked: a SIGKILL frees it


SIGKILL_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from fakes import FakeEngine
    from textsam_eus.stream.pipeline import StreamPipeline
    from textsam_eus.stream.sources import PhantomSource
    StreamPipeline(FakeEngine(delay_s=0.02), PhantomSource(n_frames=100000, width=64, height=64), {out!r}).run()
""")


@pytest.mark.slow
def test_after_sigkill_no_reserve_file_stays_and_overwrite_works(tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "child.py"
    script.write_text(SIGKILL_CHILD.format(tests=str(TESTS), out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / "masks" / "mask_000020.png").exists():
            time.sleep(0.05)
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / outdir.RESERVE_NAME).exists()
    assert max(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 1 << 20
    StreamPipeline(FakeEngine(), _phantom(2), out, PipelineConfig(overwrite=True)).run()  # every file was listed
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["mask_000000.png", "mask_000001.png"]


def test_nan_pixels_warn_in_one_line_and_in_the_summary(tmp_path, capsys):
    folder = tmp_path / "stills"
    folder.mkdir()
    img = np.full((32, 32), 0.5, np.float32)
    img[:4, :4] = np.nan
    assert cv2.imwrite(str(folder / "nan.tif"), img)
    cv2.imwrite(str(folder / "ok.png"), np.full((32, 32), 90, np.uint8))
    summary = StreamPipeline(FakeEngine(), open_source(str(folder)), tmp_path / "o").run()
    assert any("nan.tif" in w and "NaN" in w for w in summary["warnings"])
    err = capsys.readouterr().err
    assert "NaN" in err and ".py:" not in err and "warnings.warn" not in err


def test_library_warnings_become_one_line_warnings(tmp_path, capsys):
    import warnings

    def noisy(_n):
        warnings.warn("a library complains\nover two lines", UserWarning)

    before = warnings.showwarning
    summary = StreamPipeline(FakeEngine(), _phantom(2), tmp_path / "o", progress=noisy).run()
    err = capsys.readouterr().err
    assert "a library complains" in err and ".py:" not in err and "over two lines" not in err
    assert any("a library complains" in w for w in summary["warnings"])
    assert warnings.showwarning is before  # the hook is removed after the run


def test_pydicom_warnings_reach_the_summary_in_one_line(tmp_path, capsys, ckpt):
    pydicom = pytest.importorskip("pydicom")
    from dicom_fakes import make_us_dicom, moving_disc_frames

    path = tmp_path / "cine.dcm"
    make_us_dicom(path, moving_disc_frames(1))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 0  # pydicom warns, and reads the one frame there is
    ds.save_as(path)
    assert main(_stream(ckpt, path, tmp_path / "o")) == 0
    err = capsys.readouterr().err
    assert "warning: pydicom: A value of '0'" in err and ".py:" not in err and "warn_and_log" not in err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["complete"] and any(w.startswith("pydicom: A value of '0'") for w in s["warnings"])


def test_a_dicom_without_frames_says_so(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from dicom_fakes import make_us_dicom, moving_disc_frames

    from textsam_eus.stream.base import SourceError
    from textsam_eus.stream.sources.dicom import DicomSource

    make_us_dicom(tmp_path / "full.dcm", moving_disc_frames(2))
    ds = pydicom.dcmread(tmp_path / "full.dcm")
    ds.NumberOfFrames, ds.PixelData = 0, b""
    ds.save_as(tmp_path / "zero.dcm")
    with pytest.raises(SourceError) as err:
        DicomSource(tmp_path / "zero.dcm")
    assert "no frames" in str(err.value) and "pylibjpeg" not in str(err.value)

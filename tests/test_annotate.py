"""``textsam-eus annotate``: an archive through the stream file pipeline on a real local Ray instance (shared by
the module's tests), resumable, with workers killed and Ctrl-C.

The Ray instance is started by the command's own :func:`~textsam_eus.archive.runner.start_local_ray` (loopback,
no dashboard); the in-process runs reuse it, the Ctrl-C run (a subprocess) connects to it with ``--address``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dicom_fakes import make_us_dicom, moving_disc_frames

from textsam_eus.archive.plan import exam_folder_name, plan_archive
from textsam_eus.cli import main
from textsam_eus.core.imports import is_ray_available
from textsam_eus.stream.sinks.encoders import VideoEncoder
from textsam_eus.stream.sources import PhantomSource

REPO = Path(__file__).resolve().parents[1]
ENGINE = ["--engine", "torch", "--device", "cpu", "--no-progress"]
NO_RAY = "ray is not installed (pip install 'textsam-eus[archive]')"
needs_ray = pytest.mark.skipif(not is_ray_available(), reason=NO_RAY)


def _phantom_video(path: Path, n: int, seed: int, size=(128, 96)) -> Path:
    with PhantomSource(n_frames=n, width=size[0], height=size[1], seed=seed) as src, VideoEncoder(path, 15.0) as enc:
        for rec in src:
            enc.write(rec.image)
    return path


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "archive.csv", newline="", encoding="utf-8") as f:
        return {Path(r["source"]).name: r for r in csv.DictReader(f)}


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- no Ray needed


def test_folder_names_are_unique_by_construction(tmp_path):
    names = ["clip.mp4", "clip.mkv", "clip_mp4.mp4", "a%2Fclip.mp4", "Clip.mp4", "clip.mp4.mp4"]
    for n in names:
        _phantom_video(tmp_path / n, 1, 0, (32, 32)) if n == "clip.mp4" else (tmp_path / n).write_bytes(b"x")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "clip.mp4").write_bytes((tmp_path / "clip.mp4").read_bytes() + b"")  # same bytes, other file
    (tmp_path / "out" / "clip.mp4").mkdir(parents=True)  # an earlier run's outputs inside the archive: left out
    (tmp_path / "out" / "clip.mp4" / "overlay.mp4").write_bytes(b"x")
    exams = plan_archive(str(tmp_path), tmp_path / "out")
    folders = [e.name for e in exams]
    assert len(folders) == len(set(folders)) == len(names) + 1
    assert {"clip.mp4", "clip.mkv", "clip_mp4.mp4", "a%2Fclip.mp4", "a%252Fclip.mp4"} <= set(folders)
    # a name never depends on the other files: the same key, alone, gets the same folder
    assert exam_folder_name("clip.mp4") == "clip.mp4" and exam_folder_name("a/clip.mp4") == "a%2Fclip.mp4"
    # one-to-one also for hidden, non-ASCII and over-long keys
    keys = [".x.mp4", "%2Ex.mp4", "é.mp4", "a~b", "a%7Eb", "x" * 300, "x" * 299 + "y"]
    made = [exam_folder_name(k) for k in keys]
    assert len(set(made)) == len(keys) and not any(m.startswith(".") or len(m) > 200 for m in made)
    notes = {e.name: e.notes for e in exams}
    assert any("same stem" in n for n in notes["clip.mkv"])


def test_list_csv_duplicates_missing_and_folders_are_listed(tmp_path):
    _phantom_video(tmp_path / "one.mp4", 1, 0, (32, 32))
    (tmp_path / "sub").mkdir()
    (tmp_path / "list.csv").write_text("source,id\none.mp4,\nsub/../one.mp4,\nmissing.mp4,\nsub,\none.mp4,\n")
    exams = plan_archive(str(tmp_path / "list.csv"), tmp_path / "out")
    got = [(e.key, e.status, (e.problem or "").split(" ")[0:3]) for e in exams]
    assert got[0][1] is None  # annotated
    assert got[1][1] == "skipped" and "same file" in exams[1].problem
    assert got[2][1] == "failed" and "not found" in exams[2].problem
    assert got[3][1] == "failed" and "folder" in exams[3].problem
    assert got[4][1] == "skipped" and "listed twice" in exams[4].problem


@needs_ray
def test_bad_out_and_bad_options_fail_before_anything_is_written(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    _phantom_video(src / "a.mp4", 1, 0, (32, 32))
    (tmp_path / "file").write_text("x")
    assert main(["annotate", "--source", str(src), "--out", str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text("{}")  # a stream run's folder, not an archive
    assert main(["annotate", "--source", str(src), "--out", str(other)]) == 1
    assert "not an annotate run" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["summary.json"]  # refused before anything is written
    assert main(["annotate", "--source", str(src), "--out", str(tmp_path / "o"), "--masks", "png,tiff"]) == 1
    assert main(["annotate", "--source", str(src), "--out", str(tmp_path / "o"), "--workers", "0"]) == 1
    assert main(["annotate", "--source", str(src / "a.mp4"), "--out", str(tmp_path / "o")]) == 1
    assert "stream --source FILE" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_ray_is_a_one_line_error_naming_the_extra(monkeypatch, tmp_path, capsys):
    from textsam_eus.core import imports

    monkeypatch.setitem(sys.modules, "ray", None)
    imports.is_ray_available.cache_clear()
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.mp4").write_bytes(b"x")
        assert main(["annotate", "--source", str(src), "--out", str(tmp_path / "o")]) == 1
        err = capsys.readouterr().err.strip()
        assert "textsam-eus[archive]" in err and len(err.splitlines()) == 1
        assert not (tmp_path / "o").exists()
    finally:
        imports.is_ray_available.cache_clear()


# --------------------------------------------------------------------------- on a local Ray instance


@pytest.fixture(scope="module")
def ray_local():
    if not is_ray_available():
        pytest.skip(NO_RAY)
    from textsam_eus.archive.runner import start_local_ray

    ray = start_local_ray(num_cpus=4)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """clip.mp4 / clip.mkv / clip_mp4.mp4 (same stems), a DICOM cine without extension, a truncated recording, a
    text file named .mp4, a note."""
    root = tmp_path_factory.mktemp("archive")
    src = root / "src"
    src.mkdir()
    for i, name in enumerate(["clip.mp4", "clip.mkv", "clip_mp4.mp4"]):
        _phantom_video(src / name, 6, seed=i + 1)
    whole = _phantom_video(root / "whole.ts", 24, seed=7)
    data = bytearray(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    data[len(data) // 2: len(data) // 2 + 2000] = bytes(2000)  # damage in the middle, then cut
    (src / "truncated.ts").write_bytes(bytes(data))
    make_us_dicom(src / "cine", moving_disc_frames(6))
    (src / "notes.mp4").write_text("not a video")
    (src / "readme.txt").write_text("the examinations of 2025")
    return src


@pytest.fixture(scope="module")
def first_run(ray_local, archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "out"
    rc = main(["annotate", "--source", str(archive), "--out", str(out), "--workers", "2", "--threads-per-worker", "1",
               *ENGINE])
    return rc, out


@pytest.mark.slow
def test_local_ray_is_loopback_only(ray_local):
    assert ray_local.util.get_node_ip_address() == "127.0.0.1"
    assert ray_local.get_runtime_context().gcs_address.startswith("127.0.0.1:")


@needs_ray
@pytest.mark.slow
def test_archive_outputs_equal_stream_per_file_and_bad_files_are_listed(first_run, archive, tmp_path):
    rc, out = first_run
    assert rc == 1  # notes.mp4 failed
    rows = _rows(out)
    assert {n: r["status"] for n, r in rows.items()} == {
        "clip.mp4": "done", "clip.mkv": "done", "clip_mp4.mp4": "done", "truncated.ts": "done", "cine": "done",
        "notes.mp4": "failed", "readme.txt": "skipped"}
    assert "not a video file" in rows["notes.mp4"]["reason"]
    assert "not a video or DICOM file" in rows["readme.txt"]["reason"]
    assert "truncated" in rows["truncated.ts"]["reason"] and 5 < int(rows["truncated.ts"]["frames"]) < 24
    assert len({rows[n]["output"] for n in ("clip.mp4", "clip.mkv", "clip_mp4.mp4")}) == 3
    data = json.loads((out / "archive.json").read_text())
    assert data["model"]["sha256"] and data["counts"] == {"done": 5, "skipped": 1, "failed": 1, "incomplete": 0}
    assert [Path(r["source"]).name for r in data["examinations"]] == list(rows)  # the CSV and the JSON agree
    for r in (r for r in data["examinations"] if r["status"] == "done"):
        assert r["model_sha256"] == data["model"]["sha256"] and len(r["input_sha256"]) == 64
        assert 0.0 <= r["presence_shown"] <= 1.0 and r["frames"] >= r["mask_frames"] >= 0
        assert r["mask_area_max"] >= r["mask_area_min"] > 0 if r["mask_frames"] else r["mask_area_max"] is None
    page = (out / "archive.html").read_text()
    assert 'href="clip_mp4.mp4/report.html"' in page and "notes.mp4" in page
    assert not list(out.rglob("*.part"))
    # the reference: plain `stream` over the same files (one run over a folder of them: one model load)
    ref_src, ref = tmp_path / "ref_src", tmp_path / "ref"
    ref_src.mkdir()
    names = ("clip.mp4", "clip.mkv", "clip_mp4.mp4", "truncated.ts", "cine")
    for i, name in enumerate(names):
        os.link(archive / name, ref_src / f"f{i}{Path(name).suffix}")
    assert main(["stream", "--source", str(ref_src), "--out", str(ref), "--workers", "1", "--threads", "1",
                 *ENGINE]) == 0
    refs = {}
    for folder in ref.iterdir():
        s_ref = json.loads((folder / "summary.json").read_text())
        refs[names[int(Path(s_ref["source"]).stem[1:])]] = folder
    assert len(refs) == len(names)
    for name, ref_folder in refs.items():
        mine = out / rows[name]["output"]
        assert sorted(p.name for p in mine.iterdir()) == sorted(p.name for p in ref_folder.iterdir())
        assert _folder_bytes(mine / "masks") == _folder_bytes(ref_folder / "masks") != {}
        s_mine, s_ref = (json.loads((f / "summary.json").read_text()) for f in (mine, ref_folder))
        assert s_mine["frames_out"] == s_ref["frames_out"] and s_mine["outputs"] == s_ref["outputs"]


@needs_ray
@pytest.mark.slow
def test_rerun_skips_finished_and_redoes_incomplete_from_scratch(first_run, archive, tmp_path, capsys):
    _, out = first_run
    done = out / "clip.mp4"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in done.rglob("*") if p.is_file()}
    crashed = out / "clip.mkv"  # as a killed run leaves it: summary.json says running, a stray mask, a user's file
    s = json.loads((crashed / "summary.json").read_text())
    s.update(complete=False, finalised=False, stop_reason="running")
    (crashed / "summary.json").write_text(json.dumps(s))
    (crashed / "masks" / "mask_999999.png").write_bytes(b"stale")
    with open(crashed / ".textsam-eus.outputs", "a") as f:  # a killed run had claimed it before writing it
        f.write('"masks/mask_999999.png"\n')
    (crashed / "my_notes.txt").write_text("mine")
    old_mkv = (crashed / "summary.json").stat().st_mtime_ns
    rc = main(["annotate", "--source", str(archive), "--out", str(out), "--workers", "1", "--threads-per-worker", "1",
               *ENGINE])
    assert rc == 1
    rows = _rows(out)
    assert rows["clip.mp4"]["status"] == rows["clip_mp4.mp4"]["status"] == "skipped"
    assert "already annotated" in rows["clip.mp4"]["reason"] and rows["clip.mp4"]["frames"] == "6"
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in done.rglob("*") if p.is_file()} == before
    assert rows["clip.mkv"]["status"] == "done" and "incomplete" in rows["clip.mkv"]["notes"]
    assert json.loads((crashed / "summary.json").read_text())["complete"] is True
    assert (crashed / "summary.json").stat().st_mtime_ns != old_mkv
    assert not (crashed / "masks" / "mask_999999.png").exists()  # our own outputs were cleared first
    assert (crashed / "my_notes.txt").read_text() == "mine"  # anything else is left alone
    # other settings into the same --out: refused, nothing changed
    table = (out / "archive.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["annotate", "--source", str(archive), "--out", str(out), "--masks", "png,coco", *ENGINE]) == 1
    assert "other settings" in capsys.readouterr().err
    assert (out / "archive.json").stat().st_mtime_ns == table


def _actor_progress(ray):
    """(actor name, progress) of every annotate worker alive in the Ray instance."""
    from textsam_eus.archive.runner import NAMESPACE

    found = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != NAMESPACE or not entry["name"].startswith("annotate-"):
            continue
        try:
            actor = ray.get_actor(entry["name"], namespace=NAMESPACE)
            found.append(ray.get(actor.progress.options(concurrency_group="control").remote(), timeout=5))
        except Exception:  # noqa: BLE001 - restarting or gone
            continue
    return found


@needs_ray
@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_its_file_retried_then_failed(ray_local, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _phantom_video(src / "a.mp4", 24, seed=11)
    _phantom_video(src / "b.mp4", 24, seed=12)
    out = tmp_path / "out"
    result = {}
    runner = threading.Thread(target=lambda: result.update(rc=main(
        ["annotate", "--source", str(src), "--out", str(out), "--workers", "1", "--threads-per-worker", "1",
         "--retries", "1", *ENGINE])))
    runner.start()
    kills = {"a.mp4": 1, "b.mp4": 2}  # a: killed once, retried, done; b: killed twice, retries spent, failed
    killed: dict[str, list[int]] = {"a.mp4": [], "b.mp4": []}
    arenas = []  # each worker's MALLOC_ARENA_MAX (a restarted one's too): the runner sets 2
    deadline = time.monotonic() + 150
    while runner.is_alive() and time.monotonic() < deadline:
        for p in _actor_progress(ray_local):
            name = Path(p["source"] or "").name
            if name in kills and len(killed[name]) < kills[name] and p["frames"] >= 2 and p["pid"] not in killed[name]:
                environ = Path(f"/proc/{p['pid']}/environ").read_bytes().split(b"\0")
                arenas.append(next((e for e in environ if e.startswith(b"MALLOC_ARENA_MAX=")), None))
                os.kill(p["pid"], signal.SIGKILL)
                killed[name].append(p["pid"])
        time.sleep(0.2)
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert [len(v) for v in killed.values()] == [1, 2], killed
    expect = f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', '2')}".encode()
    assert arenas == [expect] * 3, arenas
    assert result["rc"] == 1
    rows = _rows(out)
    assert rows["a.mp4"]["status"] == "done" and "died" in rows["a.mp4"]["notes"]
    folder = out / rows["a.mp4"]["output"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["complete"] and summary["frames_out"] == 24 == len(list((folder / "masks").iterdir()))
    assert rows["b.mp4"]["status"] == "failed" and "worker process died" in rows["b.mp4"]["reason"]
    assert "--retries 1" in rows["b.mp4"]["reason"]


@needs_ray
@pytest.mark.slow
def test_sigint_stops_cleanly_and_leaves_a_consistent_table(ray_local, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        _phantom_video(src / f"exam{i}.mp4", 6 if i == 0 else 40, seed=20 + i)
    out = tmp_path / "out"
    address = ray_local.get_runtime_context().gcs_address
    # a local ray.init() turns Ray's token authentication on: a client given its address says so (Ray's variable)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "token"}
    proc = subprocess.Popen([sys.executable, "-m", "textsam_eus.cli", "annotate", "--source", str(src), "--out",
                             str(out), "--address", address, "--workers", "1", "--threads-per-worker", "1", *ENGINE],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                statuses = [r["status"] for r in json.loads((out / "archive.json").read_text())["examinations"]]
            except (OSError, ValueError):
                statuses = []
            if "done" in statuses:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # the next file is under way
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, text
    data = json.loads((out / "archive.json").read_text())
    rows = {Path(r["source"]).name: r for r in data["examinations"]}
    assert rows["exam0.mp4"]["status"] == "done"
    assert rows["exam2.mp4"]["status"] == "incomplete" and "SIGINT" in rows["exam2.mp4"]["reason"]
    assert rows["exam1.mp4"]["status"] in ("done", "incomplete") and data["run"]["interrupted_by"] == "SIGINT"
    assert {n: r["status"] for n, r in _rows(out).items()} == {n: r["status"] for n, r in rows.items()}
    for name, r in rows.items():
        folder = out / r["output"]
        if r["status"] == "done":
            assert json.loads((folder / "summary.json").read_text())["complete"] is True
        elif (folder / "summary.json").exists():  # the file in progress: finalised, marked incomplete
            s = json.loads((folder / "summary.json").read_text())
            assert s["complete"] is False and s["finalised"] is True and "SIGINT" in s["stop_reason"]
    assert not list(out.rglob("*.part"))

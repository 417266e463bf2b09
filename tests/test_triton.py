"""The Triton model server (``textsam-eus serve``, PyTriton's tritonserver) and its client engine (``--engine triton``).

The real server runs on loopback from the server environment (PyTriton needs numpy < 2): the python of
``$TEXTSAM_EUS_SERVE_PYTHON`` or ``.venv-serve/bin/python`` (``.ci/run`` makes it; docs/serving.md). Without it, or
without tritonclient here, the server tests skip with the reason; the unit tests below them run anyway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, trained_like_tiny

from benchmarks.machine import free_ports

from textsam_eus.engines.triton_protocol import MODEL_NAME, model_version, parse_server_url
from textsam_eus.core.errors import OptionError

SERVE_PYTHON = Path(os.environ.get("TEXTSAM_EUS_SERVE_PYTHON") or REPO / ".venv-serve" / "bin" / "python")


# ---------------------------------------------------------------------- unit tests (no server)


def test_server_urls():
    assert parse_server_url("grpc://127.0.0.1:8001") == "127.0.0.1:8001"
    assert parse_server_url("localhost:9001") == "localhost:9001"
    assert parse_server_url("grpc://[::1]:8001") == "[::1]:8001"
    for bad, why in (("http://127.0.0.1:8000", "gRPC"), ("grpc://127.0.0.1", "HOST:PORT"),
                     ("grpc://:8001", "HOST:PORT"), ("grpc://host:99999", "HOST:PORT"), ("", "HOST:PORT")):
        with pytest.raises(OptionError, match=why):
            parse_server_url(bad)
    assert 1 <= model_version("0000000abc") <= 2 ** 28 + 1 and model_version("ffffffff") == 0xFFFFFFF + 1


def test_server_reconnect_is_checked():
    from textsam_eus.runs.settings import RunSettings

    assert RunSettings().server_reconnect == 10.0
    for bad in (-1, float("inf"), 3601):
        with pytest.raises(OptionError, match="--server-reconnect"):
            RunSettings(server_reconnect=bad)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    from textsam_eus.export.batch_encoder import add_batch_encoder
    from textsam_eus.export.onnx_export import export_bundle

    out = tmp_path_factory.mktemp("serve_bundle")
    model = trained_like_tiny(0)
    export_bundle(model, out, verify=False)
    add_batch_encoder(model, out)
    return out


def _frames(n, seed=3, w=320, h=240):
    from textsam_eus.stream.sources import PhantomSource

    with PhantomSource(n, seed=seed, width=w, height=h) as src:
        return [f.image for f in src]


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


@pytest.mark.slow
def test_served_model_batches_through_the_encoder(bundle_dir):
    """ServedModel.infer (Triton's inference function, without Triton): a batch of 3 frames, one of them seeded,
    runs the encoder once on the batch and gives each frame the local engine's mask."""
    from textsam_eus.engines.ort_engine import OrtEngine
    from textsam_eus.model.bundle import model_id, read_bundle
    from textsam_eus.serving.served_model import ServedModel

    server_engine = OrtEngine(bundle_dir, batch_encoder=True)
    calls = []
    encode = server_engine.encode
    server_engine.encode = lambda x: calls.append(x.shape) or encode(x)
    b = read_bundle(bundle_dir)
    served = ServedModel(server_engine, {"model_id": model_id(b), "lowres_size": b.lowres_size})
    local = OrtEngine(bundle_dir)
    frames = _frames(3)
    pp = local.segmenter.prepost
    xs, hws = zip(*(pp.preprocess(f) for f in frames))
    first = np.full((3, 8, 3), np.nan, np.float32)
    seed_box, seed_c = np.array([60, 50, 200, 170], np.float32), np.array([130, 110], np.float32)
    want = [local.segment(frames[0]), local.segment(frames[1], seed_prompt=(seed_box, seed_c)),
            local.segment(frames[2], iterations=0)]
    coords, labels = local.segmenter._first_prompts(frames[1].shape[:2], hws[1], None, None, None,
                                                   (seed_box, seed_c))
    first[1, :3, :2], first[1, :3, 2] = coords[0], labels[0]
    out = served.infer(np.concatenate(xs), np.array(hws, np.int32), first, np.array([[-1], [-1], [0]], np.int32))
    assert calls == [(3, 3, 256, 256)]  # one encoder run for the batch
    assert out["low_res_masks"].shape == (3, 1, 64, 64) and out["batch_size"].ravel().tolist() == [3, 3, 3]
    for i, w in enumerate(want):
        logits = pp.lowres_to_input(out["low_res_masks"][i][None], hws[i])
        mask = pp.frame_mask(logits, frames[i].shape[:2], local.segmenter.threshold)
        assert _iou(mask, w.mask) >= 0.99
        assert out["passes"][i, 0] == w.passes
        assert abs(out["presence"][i, 0] - w.presence) < 1e-4 and abs(out["iou"][i, 0] - w.iou) < 1e-4
    bad = served.infer(xs[0], np.array([[0, 5]], np.int32), first[:1], np.array([[-1]], np.int32))
    assert bad["passes"][0, 0] == -1  # refused, not a crash of the batch
    endless = served.infer(xs[0], np.array([hws[0]], np.int32), first[:1], np.array([[10 ** 9]], np.int32))
    assert endless["passes"][0, 0] == -1  # a request for a billion refinement passes is refused, not run


@pytest.mark.slow
def test_batch_encoder_needs_the_bundles_checkpoint(bundle_dir, tmp_path):
    from textsam_eus.export.batch_encoder import add_batch_encoder
    from textsam_eus.export.errors import ExportError

    other = tmp_path / "b"
    shutil.copytree(bundle_dir, other)
    with pytest.raises(ExportError, match="not the model of bundle"):
        add_batch_encoder(trained_like_tiny(1), other)


def test_serve_needs_the_server_environment(capsys):
    """In an environment with numpy 2 (or without PyTriton) `serve` is a one-line error naming the fix."""
    import numpy

    from textsam_eus.cli import main
    from textsam_eus.core.imports import is_pytriton_available

    if is_pytriton_available() and int(numpy.__version__.split(".")[0]) < 2:
        pytest.skip("this is the server environment")
    assert main(["serve", "--checkpoint", "demo"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ".venv-serve" in err and "numpy" in err


def test_server_flags_and_ports_are_one_line_errors(capsys):
    from textsam_eus.cli import main
    from textsam_eus.serving.triton_server import ServerConfig, check_ports_free

    for argv, flag in ((["--grpc-port", "0"], "--grpc-port"), (["--http-port", "8001"], "must differ"),
                       (["--max-batch-size", "0"], "--max-batch-size"),
                       (["--max-queue-delay-us", "-1"], "--max-queue-delay-us"), (["--instances", "0"], "--instances"),
                       (["--instances", "17"], "1..16")):
        assert main(["serve", *argv]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0], err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        free = free_ports(2)
        with pytest.raises(OptionError, match=f"--metrics-port {busy}: the port is in use"):
            check_ports_free(ServerConfig(grpc_port=free[0], http_port=free[1], metrics_port=busy))
    with pytest.raises(OptionError, match="--host 192.0.2.1: cannot listen there"):  # not this machine's address
        check_ports_free(ServerConfig(host="192.0.2.1", grpc_port=free[0], http_port=free[1], metrics_port=busy))


@pytest.mark.slow
def test_export_serving_adds_the_batched_encoder(tmp_path, capsys):
    from textsam_eus.cli import main
    from textsam_eus.model.bundle import BATCH_ENCODER_ROLE, model_id, read_bundle
    from textsam_eus.model.checkpoint import save_checkpoint

    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(trained_like_tiny(2), ckpt)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b"), "--no-verify"]) == 0
    before = read_bundle(tmp_path / "b")
    assert BATCH_ENCODER_ROLE not in before.files and len(before.source["checkpoint_sha256"]) == 64
    assert main(["export", "--bundle", str(tmp_path / "b"), "--checkpoint", str(ckpt), "--serving"]) == 0
    after = read_bundle(tmp_path / "b")
    assert after.files[BATCH_ENCODER_ROLE] == "encoder_batch.onnx"
    assert after.source["batch_encoder_parity"]["max_abs_diff"] <= 1e-3
    assert model_id(after) == model_id(before)  # the same model
    capsys.readouterr()


# ---------------------------------------------------------------------- the real server


def _descendants(pid):
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Server:
    """``textsam-eus serve`` in the server environment, on free loopback ports. Batches of up to 2 frames, and a
    request may wait 100 ms for a second one: two clients in step then share every encoder run."""

    def __init__(self, bundle, log_dir, *extra, ports=None):
        self.grpc, self.http, self.metrics = ports or free_ports(3)
        self.url = f"grpc://127.0.0.1:{self.grpc}"
        self.log = Path(log_dir) / f"serve-{self.grpc}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [str(SERVE_PYTHON), "-m", "textsam_eus.cli", "serve", "--bundle", str(bundle), "--grpc-port",
             str(self.grpc), "--http-port", str(self.http), "--metrics-port", str(self.metrics), "--threads", "1",
             "--max-batch-size", "2", "--max-queue-delay-us", "100000", "--log-file", str(self.log) + ".triton", *extra],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.tree: set[int] = set()

    def wait_ready(self, timeout=120):
        import tritonclient.grpc as grpc

        client = grpc.InferenceServerClient(f"127.0.0.1:{self.grpc}")
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if client.is_model_ready(MODEL_NAME) and "serving" in self.log.read_text():
                    self.tree = set(_descendants(self.proc.pid))
                    return self
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.3)
        pytest.fail(f"the server was not ready within {timeout} s: {self.log.read_text()[-2000:]}")

    def metric(self, name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5).read().decode()
        m = re.search(rf'^{name}{{[^}}]*model="{MODEL_NAME}"[^}}]*}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else None

    def kill_leftovers(self):
        for pid in [self.proc.pid, *self.tree]:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _need_server_env():
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed: pip install "
                        "'textsam-eus[triton-client]'")
    if not SERVE_PYTHON.is_file():
        pytest.skip(f"no server environment at {SERVE_PYTHON}: make it with 'python3 -m venv --system-site-packages "
                    ".venv-serve && .venv-serve/bin/pip install -e .[cpu,serve]' (or set TEXTSAM_EUS_SERVE_PYTHON)")
    probe = subprocess.run([str(SERVE_PYTHON), "-c", "import pytriton, numpy; assert int(numpy.__version__[0]) < 2"],
                           capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"{SERVE_PYTHON} has no PyTriton with numpy < 2: {probe.stderr.strip()[-200:]}")


@pytest.fixture(scope="module")
def server(bundle_dir, tmp_path_factory):
    _need_server_env()
    s = Server(bundle_dir, tmp_path_factory.mktemp("serve_logs"))
    try:
        yield s.wait_ready()
    finally:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            try:
                s.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        s.kill_leftovers()


def _stream(url, out, bundle, *extra, n=10, video=False):
    from textsam_eus.cli import main

    model = ["--bundle", str(bundle)] if bundle else []
    return main(["stream", "--source", f"phantom:{n}", "--width", "320", "--height", "240", "--out", str(out),
                 "--engine", "triton", "--server", url, *model, "--roi", "none", *([] if video else ["--no-video"]),
                 "--no-report", "--no-progress", "--server-timeout", "5", *extra])


@pytest.mark.slow
def test_two_streams_batched_and_equal_to_local(server, bundle_dir, tmp_path):
    """Two concurrent `stream --engine triton` runs: their masks equal the local onnxruntime engine's on the same
    frames, and Triton formed batches of more than one frame (metrics and the clients' batch sizes)."""
    from textsam_eus.engines.ort_engine import OrtEngine

    count0 = server.metric("nv_inference_count") or 0.0
    exec0 = server.metric("nv_inference_exec_count") or 0.0
    rcs = {}
    threads = [threading.Thread(target=lambda i=i: rcs.__setitem__(i, _stream(server.url, tmp_path / f"room{i}",
                                                                              bundle_dir)))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert rcs == {0: 0, 1: 0}
    local = OrtEngine(bundle_dir)
    frames = _frames(10, seed=0)
    import cv2

    sizes = {}
    for i in range(2):
        summary = json.loads((tmp_path / f"room{i}" / "summary.json").read_text())
        assert summary["complete"] and summary["frames_out"] == 10
        eng = summary["engine"]
        assert eng["engine"] == "triton" and eng["server"] == server.url and eng["encoder_batched"]
        assert {"server", "network", "encode", "decode_0"} <= set(summary["stages_ms"])
        sizes.update({int(k): v for k, v in eng["batch_sizes"].items()})
        for k, frame in enumerate(frames):
            got = cv2.imread(str(tmp_path / f"room{i}" / "masks" / f"mask_{k:06d}.png"), cv2.IMREAD_GRAYSCALE) > 0
            assert _iou(got, local.segment(frame).mask) >= 0.99, (i, k)
    count = server.metric("nv_inference_count") - count0
    execs = server.metric("nv_inference_exec_count") - exec0
    assert count == 20 and execs < count, (count, execs)  # some encoder runs took 2 frames
    assert max(sizes) >= 2


@pytest.mark.slow
def test_wrong_bundle_and_no_server_are_one_line_errors(server, bundle_dir, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(bundle_dir, other)
    meta = json.loads((other / "bundle.json").read_text())
    meta["prompt_tokens"][0][0] += 0.5  # another model (its prompt), same graphs
    (other / "bundle.json").write_text(json.dumps(meta))
    assert _stream(server.url, tmp_path / "o1", other, n=2) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "serves another model" in err[0] and server.url in err[0]
    assert _stream(server.url, tmp_path / "o2", bundle_dir, "--checkpoint", "demo", n=2) == 0  # --bundle decides
    capsys.readouterr()
    port = free_ports(1)[0]
    assert _stream(f"grpc://127.0.0.1:{port}", tmp_path / "o3", bundle_dir, n=2) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Triton server answers" in err[0] and "textsam-eus serve" in err[0]


@pytest.mark.slow
def test_bad_request_is_refused_while_another_client_works(server, bundle_dir):
    """A client sending a frame of the wrong shape or dtype gets an error naming it; a second client's frames keep
    coming back right meanwhile."""
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    from textsam_eus.engines import create_engine
    from textsam_eus.model.bundle import model_id, read_bundle

    good = create_engine("triton", server=server.url, expect_model_id=model_id(read_bundle(bundle_dir)))
    frames = _frames(6, seed=5)
    results, stop = [], threading.Event()

    def room():
        while not stop.is_set() and len(results) < 12:
            results.append(good.segment(frames[len(results) % len(frames)]))

    t = threading.Thread(target=room)
    t.start()
    bad = grpc.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    version = good.version
    errors = []
    for shape, dtype, arr in (([1, 3, 128, 128], "FP32", np.zeros((1, 3, 128, 128), np.float32)),
                              ([1, 3, 256, 256], "FP64", np.zeros((1, 3, 256, 256), np.float64))):
        inputs = []
        for name, a, dt in (("image", arr, dtype), ("resized_hw", np.array([[100, 100]], np.int32), "INT32"),
                            ("first_points", np.full((1, 8, 3), np.nan, np.float32), "FP32"),
                            ("iterations", np.array([[-1]], np.int32), "INT32")):
            inp = grpc.InferInput(name, list(a.shape), dt)
            inp.set_data_from_numpy(a)
            inputs.append(inp)
        with pytest.raises(InferenceServerException) as exc:
            bad.infer(MODEL_NAME, inputs, model_version=version, client_timeout=10)
        errors.append(str(exc.value))
    time.sleep(0.5)
    stop.set()
    t.join(timeout=60)
    assert "image" in errors[0] and "128" in errors[0]
    assert "image" in errors[1] and ("FP64" in errors[1] or "TYPE_FP64" in errors[1])
    assert len(results) >= 3
    local = create_engine("onnxruntime", bundle=bundle_dir)
    for k, r in enumerate(results[:6]):
        assert _iou(r.mask, local.segment(frames[k]).mask) >= 0.99


@pytest.mark.slow
def test_sigkill_mid_run_finalises_the_client_run(bundle_dir, tmp_path):
    """SIGKILL of the server mid-run with two rooms streaming: both clients' runs end finalised (complete: false,
    the reason named), no tritonserver or stub of it stays behind, and a restarted server serves a new run."""
    _need_server_env()
    s = Server(bundle_dir, tmp_path).wait_ready()
    try:
        rc = {}
        rooms = ("room_a", "room_b")
        threads = [threading.Thread(target=lambda r=r: rc.setdefault(r, _stream(
            s.url, tmp_path / r, bundle_dir, "--realtime", "--fps", "15", "--server-timeout", "2",
            "--server-reconnect", "2", n=600,
            video=r == "room_b")))
            for r in rooms]
        for t in threads:
            t.start()

        def segmented(room):  # frames that came back from the server (drops of the live source do not count)
            out = tmp_path / room / "frames.jsonl"
            lines = out.read_text().splitlines() if out.is_file() else []
            return sum(1 for line in lines[:-1] if not json.loads(line).get("dropped"))  # the last may be partial

        t0 = time.monotonic()
        while time.monotonic() - t0 < 90 and min(segmented(r) for r in rooms) < 3:
            time.sleep(0.2)
        tree = set(_descendants(s.proc.pid))
        assert tree, "tritonserver runs below the serve process"
        os.kill(s.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        for t in threads:
            t.join(timeout=60)
        s2 = Server(bundle_dir, tmp_path, "--instances", "2")  # the restart (two model instances this time): it
        # starts while the killed one's processes end
        for room in rooms:
            assert rc.get(room) == 1, (room, rc)
            summary = json.loads((tmp_path / room / "summary.json").read_text())
            assert summary["complete"] is False and summary["finalised"], room
            assert "model server" in summary["stop_reason"] and s.url in summary["stop_reason"]
            assert 1 <= summary["frames_out"] < 600
        import av

        with av.open(str(tmp_path / "room_b" / "overlay.mp4")) as video:  # room_b's overlay: playable to its end
            assert sum(1 for _ in video.decode(video=0)) >= 1
        while time.monotonic() - killed < 20 and any(_alive(p) for p in tree):
            time.sleep(0.2)
        assert not [p for p in tree if _alive(p)], "processes of the killed server stayed behind"
    finally:
        s.kill_leftovers()
    try:
        import tritonclient.grpc as grpc

        s2.wait_ready()
        assert "2 instances" in s2.log.read_text()
        config = grpc.InferenceServerClient(s2.url.split("//", 1)[1]).get_model_config(MODEL_NAME, as_json=True)
        assert sum(int(g.get("count", 1)) for g in config["config"]["instance_group"]) == 2, config["config"]
        assert _stream(s2.url, tmp_path / "after", bundle_dir, n=3) == 0
        assert json.loads((tmp_path / "after" / "summary.json").read_text())["complete"]
    finally:
        s2.kill_leftovers()  # its clean stop is the next test's


@pytest.mark.slow
def test_a_client_reconnects_to_a_restarted_server(bundle_dir, tmp_path):
    """The server is killed mid-run and started again on the same ports: the client (--server-reconnect) waits for
    it, checks it serves the same model, and the run goes on to its end, complete; the summary counts the
    reconnect."""
    _need_server_env()
    s = Server(bundle_dir, tmp_path).wait_ready()
    s2 = None
    try:
        rc = {}
        t = threading.Thread(target=lambda: rc.setdefault("rc", _stream(
            s.url, tmp_path / "run", bundle_dir, "--realtime", "--fps", "15", "--server-timeout", "2",
            "--server-reconnect", "120", n=600)))
        t.start()
        out = tmp_path / "run" / "frames.jsonl"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and sum(1 for line in (out.read_text().splitlines()[:-1] if out.is_file()
                                                                 else []) if not json.loads(line).get("dropped")) < 3:
            time.sleep(0.2)
        assert t.is_alive(), "the run ended before the server could be killed"
        tree = set(_descendants(s.proc.pid))
        os.kill(s.proc.pid, signal.SIGKILL)
        while time.monotonic() - t0 < 90 and any(_alive(p) for p in tree):
            time.sleep(0.2)
        (tmp_path / "again").mkdir()  # the restarted server's log beside the first one's
        s2 = Server(bundle_dir, tmp_path / "again", ports=(s.grpc, s.http, s.metrics)).wait_ready()
        t.join(timeout=120)
        assert not t.is_alive() and rc.get("rc") == 0, rc
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["complete"] is True and summary["finalised"]
        assert summary["engine"]["reconnects"] == 1 and summary["engine"]["server_lost_s"] > 0, summary["engine"]
        assert summary["frames_in"] == 600 and summary["frames_out"] >= 4
    finally:
        s.kill_leftovers()
        if s2 is not None:
            s2.kill_leftovers()


@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly(server):
    """Last in this module: SIGTERM stops the shared server with exit code 0 and nothing of it left running."""
    tree = set(_descendants(server.proc.pid))
    assert tree
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.2)
    assert not [p for p in tree if _alive(p)]
    assert "stopped; batches served by size" in server.log.read_text()

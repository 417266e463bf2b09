"""--serve: the live view. MJPEG parsed with aiohttp's multipart reader, /stats.json, the client cap, viewers that
never read, and the page in a real headless Chromium (skipped where Chromium is not installed)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from fakes import FakeEngine, SyntheticSource

from textsam_eus.stream.sinks.encoders import SinkError
from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
from textsam_eus.stream.view.live_view import LiveViewSink, parse_serve

aiohttp = pytest.importorskip("aiohttp")


def _until(cond, what: str, limit_s: float = 30.0):
    """Wait for ``cond()`` (bounded, so a broken server fails the test instead of hanging it)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _disc(i: int, h: int = 96, w: int = 128) -> np.ndarray:
    img = np.full((h, w, 3), 30, np.uint8)
    cv2.circle(img, (10 + (7 * i) % (w - 20), h // 2), 12, (220, 220, 220), -1)
    return img


class _Run:
    """A pipeline with a live view in a thread. Frame 1 waits for ``gate``, so viewers can connect first."""

    def __init__(self, tmp_path, n, image=_disc, live=True, interval=0.0, **cfg):
        self.gate = threading.Event()

        def frame(i):
            if i == 1:
                self.gate.wait(60)
            return image(i)

        self.pipe = StreamPipeline(FakeEngine(), SyntheticSource(n, frame, live=live, interval=interval), tmp_path,
                                   PipelineConfig(serve="127.0.0.1:0", handle_signals=False, masks="none", **cfg))
        self.summary = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.sink = _until(lambda: self.pipe.live_view, "the live view to start")

    def _run(self):
        self.summary = self.pipe.run()

    def stop(self):
        self.gate.set()
        self.pipe.stop_event.set()
        self.pipe.source.close()
        self.thread.join(60)


def test_mjpeg_parts_stats_json_and_page(tmp_path):
    run = _Run(tmp_path, 400, interval=0.02)
    url = run.sink.url
    assert url.startswith("http://127.0.0.1:")

    async def fetch():
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "video.mjpg") as resp:
                assert resp.status == 200 and resp.content_type == "multipart/x-mixed-replace"
                run.gate.set()  # connected: let the frames flow
                reader = aiohttp.MultipartReader.from_response(resp)
                parts = []
                while len(parts) < 2:
                    part = await reader.next()
                    assert part is not None and part.headers["Content-Type"] == "image/jpeg"
                    parts.append(await part.read())
            async with session.get(url + "stats.json") as r:
                stats = await r.json()
            async with session.get(url) as r:
                page = await r.text()
            async with session.post(url + "stats.json", data=b"x") as r:
                post = r.status
            async with session.get(url + "nothing") as r:
                missing = r.status
            return parts, stats, page, post, missing

    parts, stats, page, post, missing = asyncio.run(asyncio.wait_for(fetch(), 60))
    images = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in parts]
    assert all(im is not None and im.shape == (96, 128, 3) for im in images)
    assert stats["frames"] >= 1 and stats["running"] is True and stats["latency_ms"]["p50"] is not None
    assert stats["max_viewers"] == 8 and isinstance(stats["latency_recent"], list)
    assert '<img id="video" src="/video.mjpg"' in page and post == 405 and missing == 404
    run.stop()
    assert run.summary["outputs"]["serve"] == url
    assert run.summary["outputs"]["serve_jpeg_encoded"] <= run.summary["frames_out"]  # at most once per frame


def test_viewers_that_never_read_do_not_hold_up_the_run_and_the_ninth_gets_503(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)  # ~40 kB per JPEG
    run = _Run(tmp_path, 150, image=lambda i: np.roll(noise, 3 * i, axis=1), live=False)
    stalled = []
    for _ in range(8):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window: its buffers fill in a frame or two
        s.connect(("127.0.0.1", run.sink.port))
        s.sendall(b"GET /video.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
        stalled.append(s)
    _until(lambda: run.sink.stats()["viewers"] == 8, "8 viewers")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(run.sink.url + "video.mjpg", timeout=10)
    assert err.value.code == 503 and b"too many viewers" in err.value.read()
    run.gate.set()
    run.thread.join(120)
    assert not run.thread.is_alive(), "the run waited for viewers that never read"
    assert run.summary["frames_out"] == 150 and run.summary["complete"]
    assert run.summary["outputs"]["serve_refused"] == 1
    assert run.summary["outputs"]["serve_jpeg_encoded"] <= 150
    for s in stalled:
        s.close()


def test_no_viewer_no_jpeg_encoding(tmp_path):
    run = _Run(tmp_path, 20, live=False)
    run.gate.set()
    run.thread.join(60)
    assert run.summary["frames_out"] == 20 and run.summary["outputs"]["serve_jpeg_encoded"] == 0
    with pytest.raises(OSError):  # the server stopped with the run
        urllib.request.urlopen(run.sink.url + "stats.json", timeout=5)


def test_serve_address_parsing_and_a_port_in_use(tmp_path):
    assert parse_serve("8080") == ("127.0.0.1", 8080) and parse_serve(8080) == ("127.0.0.1", 8080)
    assert parse_serve("0.0.0.0:81") == ("0.0.0.0", 81) and parse_serve("[::1]:0") == ("::1", 0)
    for bad in ("http", "70000", "host:", ""):
        with pytest.raises(SinkError, match="use PORT or HOST:PORT"):
            parse_serve(bad)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(SinkError, match="cannot listen.*choose another port"):
            LiveViewSink(f"127.0.0.1:{busy.getsockname()[1]}", quiet=True)
        with pytest.raises(SinkError, match="cannot listen"):  # the run fails before it writes anything
            StreamPipeline(FakeEngine(), SyntheticSource(2, _disc), tmp_path / "o",
                           PipelineConfig(serve=busy.getsockname()[1])).run()
        assert not (tmp_path / "o").exists()
    finally:
        busy.close()


# --------------------------------------------------------------------------- a real browser


class _DevTools:
    """The Chrome DevTools protocol over aiohttp's WebSocket client."""

    def __init__(self, ws):
        self.ws, self.id = ws, 0

    async def call(self, method, **params):
        self.id += 1
        await self.ws.send_json({"id": self.id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == self.id:
                assert "error" not in msg, msg
                return msg.get("result", {})

    async def js(self, expression):
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")


def _start_chromium(path, profile):
    proc = subprocess.Popen([path, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "--window-size=900,700", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    end = time.monotonic() + 60
    while port is None and time.monotonic() < end:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        if "DevTools listening on ws://" in line:
            port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    if port is None:
        proc.kill()
        pytest.skip("headless Chromium did not start here")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
    return proc, port


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="Chromium is not installed (apt-get install chromium)")
def test_live_page_updates_in_headless_chromium(tmp_path):
    run = _Run(tmp_path / "run", 100000, image=lambda i: _disc(i, 240, 320), interval=1 / 15)
    run.gate.set()
    proc, port = _start_chromium(shutil.which("chromium") or shutil.which("chromium-browser"), tmp_path / "profile")
    try:
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

        async def browse():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ws_url, max_msg_size=0) as ws:
                    dt = _DevTools(ws)
                    await dt.call("Page.enable")
                    await dt.call("Page.navigate", url=run.sink.url)
                    for _ in range(600):  # the MJPEG image has a frame and the stats have been polled
                        ready = await dt.js("(document.getElementById('video') || {}).naturalWidth > 0 && "
                                            "/^[0-9]+$/.test(document.getElementById('frames').textContent)")
                        if ready:
                            break
                        await asyncio.sleep(0.05)
                    assert ready, "the page never showed the stream"
                    box = json.loads(await dt.js("JSON.stringify(document.getElementById('video')"
                                                 ".getBoundingClientRect())"))
                    clip = {"x": box["x"], "y": box["y"], "width": box["width"], "height": box["height"],
                            "scale": 1}
                    shots = []
                    for _ in range(2):
                        start = run.sink.frames
                        for _ in range(600):  # a few new frames between the screenshots
                            if run.sink.frames >= start + 5:
                                break
                            await asyncio.sleep(0.05)
                        await asyncio.sleep(0.3)
                        shot = await dt.call("Page.captureScreenshot", format="png", clip=clip)
                        shots.append(shot["data"])
                    frames_text = await dt.js("document.getElementById('frames').textContent")
                    return shots, frames_text, box

        shots, frames_text, box = asyncio.run(asyncio.wait_for(browse(), 120))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    stats = json.loads(urllib.request.urlopen(run.sink.url + "stats.json", timeout=10).read())
    run.stop()
    a, b = (cv2.imdecode(np.frombuffer(base64.b64decode(s), np.uint8), cv2.IMREAD_COLOR) for s in shots)
    assert box["width"] >= 300 and a.shape == b.shape and a.shape[0] >= 200
    assert a.std() > 10, "the video element shows no picture"
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0, "the overlay did not update between screenshots"
    assert int(frames_text) > 0 and stats["frames"] > 0


# --------------------------------------------------------------------------- stopping, slow and malformed clients


def _stalled_viewers(sink, n):
    """``n`` clients that ask for the MJPEG stream and never read it (a tiny receive window)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", sink.port))
        s.sendall(b"GET /video.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
        socks.append(s)
    _until(lambda: sink.stats()["viewers"] == n, f"{n} viewers")
    return socks


@pytest.mark.slow
def test_stalled_viewers_do_not_hold_up_the_stop_and_no_task_is_left_pending(caplog):
    import gc

    from textsam_eus.stream.record import FrameRecord

    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)  # ~40 kB per JPEG
    sink = LiveViewSink("127.0.0.1:0", quiet=True)
    socks = _stalled_viewers(sink, 8)
    state = {"i": 0, "encoded": -1, "still": 0}

    def all_stuck():  # a new frame every 20 ms until none is encoded any more: every viewer waits in a write
        rec = FrameRecord(state["i"], None, time.monotonic(), None, "x")
        rec.overlay = np.roll(noise, 3 * state["i"], axis=1)
        sink.write(rec)
        state["i"] += 1
        time.sleep(0.02)
        state["still"] = state["still"] + 1 if sink.encoded == state["encoded"] else 0
        state["encoded"] = sink.encoded
        return state["still"] >= 10 and sink.encoded >= 2

    _until(all_stuck, "every viewer to stop taking frames")
    t = time.monotonic()
    sink.close()
    took = time.monotonic() - t
    # aiohttp's graceful shutdown would wait its timeout for each stalled handler, then again after cancelling it
    # (2 x 1 s before): the viewers that do not read are hung up on at once instead
    assert took < 1.0, f"the stop waited {took:.2f} s on viewers that do not read"
    assert not sink._thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(sink.url + "stats.json", timeout=5)
    for s in socks:
        s.close()
    del sink
    gc.collect()
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]


@pytest.mark.slow
def test_connections_that_never_finish_their_request_are_closed_and_streams_are_not(tmp_path):
    from textsam_eus.stream.record import FrameRecord

    sink = LiveViewSink("127.0.0.1:0", quiet=True, header_timeout_s=1.0)
    slow = socket.create_connection(("127.0.0.1", sink.port))
    slow.sendall(b"GET / HTTP/1.1\r\nHo")
    idle = socket.create_connection(("127.0.0.1", sink.port))  # sends nothing at all
    t = time.monotonic()
    parts = []

    async def watch():  # a real viewer, for longer than the header timeout
        async with aiohttp.ClientSession() as session:
            async with session.get(sink.url + "video.mjpg") as resp:
                reader = aiohttp.MultipartReader.from_response(resp)
                while time.monotonic() - t < 3.0:
                    part = await reader.next()
                    parts.append(await part.read())

    def frames():
        k = 0
        while time.monotonic() - t < 4.0:
            rec = FrameRecord(k, None, time.monotonic(), None, "x")
            rec.overlay = _disc(k)
            sink.write(rec)
            k += 1
            time.sleep(0.05)

    writer = threading.Thread(target=frames, daemon=True)
    writer.start()
    closed = {}

    def wait_closed(name, s):
        s.settimeout(0.3)
        while time.monotonic() - t < 20:
            if name == "slow":
                try:
                    s.sendall(b"s")  # a byte now and then: the timeout runs from the connection's start
                except OSError:
                    break
            try:
                if s.recv(1024) == b"":
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        closed[name] = time.monotonic() - t

    watchers = [threading.Thread(target=wait_closed, args=(n, s), daemon=True) for n, s in (("slow", slow),
                                                                                           ("idle", idle))]
    for w in watchers:
        w.start()
    asyncio.run(asyncio.wait_for(watch(), 30))
    for w in watchers:
        w.join(30)
    writer.join(10)
    sink.close()
    slow.close()
    idle.close()
    assert closed["slow"] < 10 and closed["idle"] < 10, closed
    assert len(parts) >= 10, "the MJPEG viewer was cut off by the header timeout"


def test_malformed_requests_get_a_quiet_400(caplog, capfd):
    sink = LiveViewSink("127.0.0.1:0", quiet=True)

    def status(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as c:
            c.sendall(data)
            return c.recv(64).split(b"\r\n", 1)[0]

    try:
        replies = [status(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),  # an over-long URL
                   status(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n"),
                   status(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n")]
        ok = urllib.request.urlopen(sink.url + "stats.json", timeout=10).status
    finally:
        sink.close()
    assert all(r.split(b" ")[1] == b"400" for r in replies), replies
    assert ok == 200 and sink.describe()["serve_bad_requests"] == 3
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error handling request" not in err
    assert not [r for r in caplog.records if r.exc_info or "Error handling request" in r.getMessage()]


# --------------------------------------------------------------------------- the stream command's live view


class _PresenceFreeEngine(FakeEngine):
    """A fake engine as the stream command uses one: no presence threshold, a decoder timing."""

    presence: dict = {}

    def segment(self, frame, **kwargs):
        result = super().segment(frame, **kwargs)
        result.timings["decode_0"] = 0.5
        return result


@pytest.mark.slow
def test_stream_serve_is_up_before_the_model_loads_and_lingers_on_the_last_frame(tmp_path, monkeypatch, capsys):
    """The URL answers before the model loads; a file run's outputs are complete before the linger starts, the
    page keeps the last frame, and Ctrl-C during the linger ends the command with 0."""
    import os
    import re
    import signal

    from textsam_eus.cli import main
    from textsam_eus.commands import stream as stream_cmd

    seen = {}

    def fake_load_engine(args, threads, quiet=False):  # stands in for the model load
        url = re.search(r"live view: (http://\S+)", capsys.readouterr().err).group(1)
        seen["url"] = url
        seen["while_loading"] = json.loads(urllib.request.urlopen(url + "stats.json", timeout=10).read())
        return _PresenceFreeEngine(), {"name": "fake"}

    monkeypatch.setattr(stream_cmd, "load_engine", fake_load_engine)
    out = tmp_path / "run"

    def during_linger():
        _until(lambda: getattr(signal.getsignal(signal.SIGINT), "__qualname__", "").startswith("_linger"),
               "the linger to start", 120)
        seen["summary"] = json.loads((out / "summary.json").read_text())
        seen["stats"] = json.loads(urllib.request.urlopen(seen["url"] + "stats.json", timeout=10).read())

        async def one_part():
            async with aiohttp.ClientSession() as session:
                async with session.get(seen["url"] + "video.mjpg") as resp:
                    part = await aiohttp.MultipartReader.from_response(resp).next()
                    return await part.read()

        seen["jpeg"] = asyncio.run(asyncio.wait_for(one_part(), 30))
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C

    helper = threading.Thread(target=during_linger, daemon=True)
    helper.start()
    rc = main(["stream", "--source", "phantom:4", "--width", "160", "--height", "120", "--out", str(out),
               "--serve", "127.0.0.1:0", "--linger", "inf", "--masks", "none", "--no-progress"])
    helper.join(30)
    err = capsys.readouterr().err
    assert rc == 0
    assert seen["while_loading"]["state"] == "starting" and seen["while_loading"]["frames"] == 0
    assert seen["summary"]["complete"] and seen["summary"]["finalised"] and seen["summary"]["frames_out"] == 4
    assert (out / "report.html").is_file() and (out / "latency.csv").is_file()
    assert seen["stats"]["state"] == "ended" and seen["stats"]["frames"] == 4 and seen["stats"]["frames_in"] == 4
    frame = cv2.imdecode(np.frombuffer(seen["jpeg"], np.uint8), cv2.IMREAD_COLOR)
    assert frame is not None and frame.shape == (120, 160, 3)
    assert "still serving its last frame" in err and "until Ctrl-C" in err
    with pytest.raises(OSError):  # stopped when the command ended
        urllib.request.urlopen(seen["url"] + "stats.json", timeout=5)
    assert json.loads((out / "summary.json").read_text()) == seen["summary"]  # nothing changed after the linger


def test_stream_linger_needs_serve_and_a_number_of_seconds(tmp_path, capsys):
    from textsam_eus.cli import main

    assert main(["stream", "--source", "phantom:2", "--out", str(tmp_path / "a"), "--linger", "5"]) == 1
    assert "--linger applies to the live view; add --serve" in capsys.readouterr().err
    assert main(["stream", "--source", "phantom:2", "--out", str(tmp_path / "b"), "--serve", "0",
                 "--linger", "-1"]) == 1
    assert "--linger -1.0 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="Chromium is not installed (apt-get install chromium)")
def test_a_page_opened_after_the_run_ended_shows_its_last_frame(tmp_path):
    sink = LiveViewSink("127.0.0.1:0", quiet=True, keep_serving=True)
    assert sink.stats()["state"] == "starting"
    summary = StreamPipeline(FakeEngine(), SyntheticSource(12, lambda i: _disc(i, 240, 320)), tmp_path / "run",
                             PipelineConfig(handle_signals=False, masks="none"), live_view=sink).run()
    assert summary["complete"] and sink.stats()["state"] == "ended" and sink.stats()["frames_in"] == 12
    proc, port = _start_chromium(shutil.which("chromium") or shutil.which("chromium-browser"), tmp_path / "profile")
    try:
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

        async def browse():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ws_url, max_msg_size=0) as ws:
                    dt = _DevTools(ws)
                    await dt.call("Page.enable")
                    await dt.call("Page.navigate", url=sink.url)
                    for _ in range(600):
                        if await dt.js("(document.getElementById('video') || {}).naturalWidth > 0 && "
                                       "/ended/.test(document.getElementById('state').textContent)"):
                            break
                        await asyncio.sleep(0.05)
                    width = await dt.js("document.getElementById('video').naturalWidth")
                    state = await dt.js("document.getElementById('state').textContent")
                    box = json.loads(await dt.js("JSON.stringify(document.getElementById('video')"
                                                 ".getBoundingClientRect())"))
                    shot = await dt.call("Page.captureScreenshot", format="png",
                                         clip={"x": box["x"], "y": box["y"], "width": box["width"],
                                               "height": box["height"], "scale": 1})
                    return width, state, shot["data"]

        width, state, shot = asyncio.run(asyncio.wait_for(browse(), 120))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        sink.shutdown()
    assert width == 320 and "ended" in state
    img = cv2.imdecode(np.frombuffer(base64.b64decode(shot), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.std() > 10, "the page shows no picture after the run ended"

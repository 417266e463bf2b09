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

from textsam_eus.stream.encoders import SinkError
from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
from textsam_eus.stream.serve import LiveViewSink, parse_serve

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

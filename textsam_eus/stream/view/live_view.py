"""``--serve [HOST:]PORT``: a browser live view of the running stream (aiohttp, in its own thread and event loop).

* ``/`` a page with the overlay, fps, latency p50/p99, drops and a latency sparkline (``live_page.py``);
  ``/video.mjpg`` the overlay as MJPEG (``multipart/x-mixed-replace``); ``/stats.json`` the numbers.
* Binds 127.0.0.1 unless a host is given; GET (and HEAD) only: anything else is 405, unknown paths 404.
* At most ``max_clients`` video streams at once; one more gets 503.
* The pipeline never waits for a viewer: :meth:`LiveViewSink.write` keeps a reference to the newest overlay and
  wakes the viewers (one thread-safe call, only while a viewer is connected). Each viewer sends the newest frame
  when it is ready for one (a latest-only slot per viewer), so a slow viewer skips frames and a viewer that stops
  reading is dropped after ``stall_timeout_s``. A frame is JPEG-encoded at most once, in the server's thread pool,
  and only when a viewer asks for it. Every part is followed by the next boundary, and a viewer that got no newer
  frame for a second gets the newest again: browsers show a part only once the next one comes, so the last frame
  of a run (or of a paused source) stays on the page.
* Connections that do not send a whole request within ``header_timeout_s`` are closed (aiohttp's
  ``keepalive_timeout``, which runs from the connection's start); a request line or header over aiohttp's limits
  gets its 400 quietly (counted as ``serve_bad_requests``, no traceback on stderr).
* The server starts with the sink (a port in use is a one-line error before any frame). ``close()`` stops it,
  unless ``keep_serving`` (the ``stream`` command's server, started before the model loads and shared by every
  run of a folder): then ``close()`` only ends the run, the page says so and keeps the last frame, and
  :meth:`shutdown` stops the server. Stopping never waits on a viewer that is not reading: viewers with unsent
  data are dropped at once, the others get the end of their stream within ``shutdown_grace_s``, and every task
  of the server's loop has ended before the loop closes.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from ..sinks.encoders import SinkError
from ..record import FrameRecord
from .live_page import PAGE
from ..sinks.base import Sink

__all__ = ["LiveViewSink", "parse_serve", "BOUNDARY"]

BOUNDARY = "textsamframe"


def parse_serve(spec: str | int) -> tuple[str, int]:
    """``"8080"`` -> ("127.0.0.1", 8080); ``"0.0.0.0:8080"``, ``"[::1]:8080"`` -> that host. Port 0 = any free."""
    text = str(spec).strip()
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SinkError(f"--serve {text!r} is invalid: use PORT or HOST:PORT (e.g. 8080 or 0.0.0.0:8080)")
    return host, int(port)


class _Viewer:
    """One MJPEG client: an event set when a newer frame than the one it sent is there."""

    def __init__(self, transport) -> None:
        self.wake = asyncio.Event()
        self.sent = -1
        self.writing = False  # inside a write that waits for the client to read
        self.transport = transport

    def behind(self) -> bool:
        """True when the client has not taken everything it was sent (a stalled or slow viewer)."""
        t = self.transport
        return self.writing or (t is not None and not t.is_closing() and t.get_write_buffer_size() > 0)


class _QuietBadRequests(logging.Filter):
    """Drops aiohttp's log records of malformed requests (too long, too many headers, not HTTP): the client gets
    its 400 and they are counted; any other record (a bug) goes on as before."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            self.count += 1
            return False
        return True


class LiveViewSink(Sink):
    """Serves the overlays it is given (see the module docstring); ``url`` once started."""

    def __init__(self, spec: str | int = 0, *, counters: Callable[[], dict] | None = None, max_clients: int = 8,
                 stall_timeout_s: float = 30.0, header_timeout_s: float = 10.0, shutdown_grace_s: float = 0.5,
                 jpeg_quality: int = 80, window: int = 1000, spark: int = 120, quiet: bool = False,
                 keep_serving: bool = False) -> None:
        try:
            from aiohttp import web  # noqa: F401
        except ImportError:
            raise SinkError("--serve needs aiohttp: pip install aiohttp") from None
        self.host, self.port = parse_serve(spec)
        self.counters = counters
        self.max_clients, self.stall_timeout_s, self.quality = int(max_clients), float(stall_timeout_s), int(jpeg_quality)
        self.header_timeout_s, self.shutdown_grace_s = float(header_timeout_s), float(shutdown_grace_s)
        self.repeat_s = 1.0  # a viewer that got no newer frame for this long gets the newest again
        self.keep_serving = bool(keep_serving)
        # "starting" (a server started before the run: the model is loading), "running", "ended" (the last frame
        # stays on the page)
        self.state = "starting" if self.keep_serving else "running"
        self._lock = threading.Lock()
        self._latency: deque[float] = deque(maxlen=int(window))  # the last frames' latencies (p50/p99, sparkline)
        self._times: deque[float] = deque()  # write times in the last second (fps)
        self.spark = int(spark)
        self._frame: np.ndarray | None = None  # the newest overlay (a reference; the pipeline makes a new one per frame)
        self._seq = -1
        self._jpeg: tuple[int, asyncio.Future] | None = None  # (seq, encoding) of the newest encoded frame
        self.frames = 0
        self.encoded = 0  # JPEG encodings done (at most one per frame)
        self.refused = 0  # viewers turned away with 503
        self.dropped_at_stop = 0  # viewers hung up on at shutdown because they were not reading
        self._bad_requests = _QuietBadRequests()
        self._log = logging.Logger("textsam_eus.serve")  # not registered: its parent is aiohttp's server logger
        self._log.parent = logging.getLogger("aiohttp.server")
        self._log.addFilter(self._bad_requests)
        self.last: dict[str, Any] = {}
        self._viewers: set[_Viewer] = set()
        self._closing = False  # the server is stopping: every viewer's stream ends
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="serve", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise SinkError(f"--serve {self.host}:{self.port}: the server did not start within 30 s; try again")
        if self._error is not None:
            raise SinkError(f"--serve {self.host}:{self.port}: cannot listen ({self._error}); choose another port "
                            "or host") from None
        self.url = f"http://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}/"
        if not quiet:
            print(f"live view: {self.url}" + (" (the model is loading)" if self.state == "starting" else ""),
                  file=sys.stderr, flush=True)

    @property
    def running(self) -> bool:
        return self.state == "running"

    # ------------------------------------------------------------------ pipeline side (write thread)
    def attach(self, counters: Callable[[], dict] | None = None) -> None:
        """A run starts writing to this (already started) server; ``counters`` gives its frame counts."""
        self.counters = counters or self.counters
        self.state = "running"

    def write(self, record: FrameRecord) -> None:
        now = time.monotonic()
        with self._lock:
            lat = record.timings.get("latency_capture_to_overlay")
            if lat is not None and np.isfinite(lat):
                self._latency.append(float(lat))
            self._times.append(now)
            while now - self._times[0] > 1.0:
                self._times.popleft()
            self.frames += 1
            self.last = {"index": int(record.index), "presence": record.info.get("presence"),
                         "decision": record.info.get("decision")}
            self._frame, self._seq = record.overlay, self._seq + 1
        self._wake_soon()

    def close(self) -> None:
        """The run's end: stops the server, or with ``keep_serving`` marks the run ended and keeps serving."""
        if self.keep_serving and self._thread.is_alive():
            if self.counters is not None:
                final = dict(self.counters())
                self.counters = lambda: final  # the page keeps the run's last numbers
            self.state = "ended"
            self._wake_soon()
            return
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the server (idempotent). Bounded: it never waits on a viewer that does not read."""
        if self.state != "ended":
            self.state = "ended"
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            try:
                loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:
                pass
            self._thread.join(10)

    def describe(self) -> dict[str, Any]:
        return {"serve": self.url, "serve_jpeg_encoded": self.encoded, "serve_refused": self.refused,
                "serve_bad_requests": self._bad_requests.count}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lat = np.fromiter(self._latency, dtype=np.float64)
            spark = [round(v, 1) for v in list(self._latency)[-self.spark:]]
            fps = float(len(self._times)) if self.running else 0.0
            last = dict(self.last)
            frames = self.frames
        counts = self.counters() if self.counters else {}
        pct = np.percentile(lat, (50, 99)) if lat.size else (None, None)
        return {"running": self.running, "state": self.state, "frames": frames,
                "frames_in": counts.get("frames_in", frames),
                "frames_dropped": counts.get("frames_dropped", 0), "fps": fps,
                "latency_ms": {"p50": None if pct[0] is None else float(pct[0]),
                               "p99": None if pct[1] is None else float(pct[1]),
                               "window": int(lat.size)},
                "latency_recent": spark, "presence": last.get("presence"), "decision": last.get("decision"),
                "index": last.get("index"), "viewers": len(self._viewers), "max_viewers": self.max_clients}

    # ------------------------------------------------------------------ server side (its own thread and loop)
    def _wake_soon(self) -> None:
        if self._viewers and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake_all)
            except RuntimeError:  # the loop has closed
                pass

    def _wake_all(self) -> None:
        for v in self._viewers:
            v.wake.set()

    def _serve(self) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._stopped = asyncio.Event()
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/video.mjpg", self._video)
        app.router.add_get("/stats.json", self._stats)
        # keepalive_timeout runs from a connection's start (aiohttp >= 3.14.4): a client that does not send a
        # whole request in time is closed; the logger drops the tracebacks of malformed requests
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=self.shutdown_grace_s,
                               keepalive_timeout=self.header_timeout_s, logger=self._log)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # the port chosen for port 0
        except (OSError, RuntimeError) as exc:
            self._error = exc
            loop.run_until_complete(runner.cleanup())
            loop.close()
            self._ready.set()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_until_complete(self._stopped.wait())
            self._closing = True
            for v in list(self._viewers):  # not reading: hang up now instead of waiting for it
                if v.behind():
                    self.dropped_at_stop += 1
                    v.transport.abort()
            self._wake_all()  # the others end their responses
            loop.run_until_complete(runner.cleanup())  # bounded by shutdown_grace_s
            self._finish_tasks(loop)
        finally:
            self._loop = None
            loop.close()

    @staticmethod
    def _finish_tasks(loop: asyncio.AbstractEventLoop) -> None:
        """Cancel what is left on the loop and let it end, so no task is destroyed while pending."""
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())

    async def _page(self, request):
        from aiohttp import web

        return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _stats(self, request):
        from aiohttp import web

        return web.json_response(self.stats(), headers={"Cache-Control": "no-store"})

    async def _encoded(self) -> tuple[int, bytes | None]:
        """(seq, JPEG) of the newest frame, encoding it once for every viewer."""
        import cv2

        with self._lock:
            frame, seq = self._frame, self._seq
        if frame is None:
            return seq, None
        if self._jpeg is None or self._jpeg[0] != seq:
            loop = asyncio.get_running_loop()

            def encode() -> bytes:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                return buf.tobytes() if ok else b""

            self._jpeg = (seq, loop.run_in_executor(None, encode))
            self.encoded += 1
        return seq, await self._jpeg[1]

    async def _video(self, request):
        from aiohttp import web

        if len(self._viewers) >= self.max_clients or self._closing:
            self.refused += 1
            why = "the live view is stopping" if self._closing else (f"too many viewers ({self.max_clients}); "
                                                                     "close one and reload")
            return web.Response(status=503, text=why + "\n", headers={"Retry-After": "5"})
        viewer = _Viewer(request.transport)
        self._viewers.add(viewer)
        resp = web.StreamResponse(headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                           "Cache-Control": "no-store", "Connection": "close"})
        delimiter = f"\r\n--{BOUNDARY}\r\n".encode()
        try:
            await resp.prepare(request)
            await resp.write(delimiter[2:])
            viewer.wake.set()  # send the newest frame at once
            while not self._closing:
                try:
                    await asyncio.wait_for(viewer.wake.wait(), self.repeat_s)
                    repeat = False
                except asyncio.TimeoutError:  # no newer frame: send the newest again, which makes a browser
                    repeat = True             # show the one before it (the last frame of an ended run)
                viewer.wake.clear()
                if self._closing:
                    break
                seq, jpeg = await self._encoded()
                if not jpeg or (seq == viewer.sent and not repeat):
                    continue
                part = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + delimiter
                viewer.writing = True
                await asyncio.wait_for(resp.write(part), self.stall_timeout_s)  # a stalled viewer is dropped
                viewer.writing = False
                viewer.sent = seq
        except asyncio.TimeoutError:  # it stopped reading: hang up instead of waiting on it
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:  # the viewer went away (or was hung up on at shutdown)
            pass
        finally:
            self._viewers.discard(viewer)
        return resp

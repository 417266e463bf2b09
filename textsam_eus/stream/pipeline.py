"""The streaming pipeline: capture/decode -> preprocess + engine -> overlay -> sinks, each stage in its own thread.

Stages are joined by bounded queues, so decoding and encoding overlap inference and memory stays flat. A live
source keeps only the newest frame when inference falls behind (latency stays bounded; dropped frames are counted
and reported); files process every frame, in order. Every stop path — end of input, a lost device, SIGINT/SIGTERM,
an error in any stage — finalises the outputs written so far (the MP4 is closed properly, masks are kept).

Per frame: the time to decode/grab it, queue waits, the engine's stages (preprocess, encode, decode_k,
postprocess), overlay, sink write, and the capture-to-overlay latency.
"""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .overlay import OverlayStyle, draw_overlay
from .report import LatencyReport
from .sinks import MaskPngSink, MaskVideoSink, VideoWriterSink, WindowSink
from .sources import ROI, FrameSource

_END = object()


@dataclass
class PipelineConfig:
    roi: ROI | None = None
    iterations: int | None = None  # refinement iterations (None: the engine's)
    temporal: bool = False  # seed the first pass with the previous frame's box/centroid when it was confident
    temporal_min_iou: float = 0.7  # predicted IoU needed to reuse a frame's box/centroid
    temporal_iterations: int = 1  # refinement passes when seeded
    queue_size: int = 4
    write_video: bool = True
    masks: str = "png"  # png | video | none
    report: bool = True
    show: bool = False
    style: OverlayStyle = field(default_factory=OverlayStyle)
    max_frames: int | None = None
    handle_signals: bool = True

    def __post_init__(self) -> None:
        if self.masks not in ("png", "video", "none"):
            raise ValueError(f"masks={self.masks!r} is invalid: choose png, video or none")
        if self.queue_size < 1:
            raise ValueError(f"queue_size={self.queue_size} is invalid: must be >= 1")


class _LatestQueue:
    """Queue for live sources: a new frame replaces an unread one (counted as dropped); the end marker never
    replaces a frame, it is delivered after it."""

    def __init__(self) -> None:
        self._item = None
        self._has = False
        self._ended = False
        self._cond = threading.Condition()
        self.dropped: list[Any] = []

    def put(self, item, timeout=None) -> None:
        with self._cond:
            if item is _END:
                self._ended = True
            else:
                if self._has:
                    self.dropped.append(self._item)
                self._item, self._has = item, True
            self._cond.notify()

    def get(self, timeout=None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._has or self._ended, timeout):
                raise queue.Empty
            if self._has:
                item, self._item, self._has = self._item, None, False
                return item
            return _END

    def get_nowait(self):
        return self.get(timeout=0)


class StreamPipeline:
    """Run ``engine`` over ``source`` and write to ``out_dir``: overlay.mp4, masks, latency.json/csv, summary.json."""

    def __init__(self, engine, source: FrameSource, out_dir: str | Path, config: PipelineConfig | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.engine = engine
        self.source = source
        self.out = Path(out_dir)
        self.cfg = config or PipelineConfig()
        self.progress = progress
        width, height = source.size
        if self.cfg.roi is not None and width and height:
            self.cfg.roi.validate(width, height)  # an ROI outside the frame fails before any work
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.report = LatencyReport(name=getattr(source, "name", ""))
        self.stats: dict[str, Any] = {"frames_in": 0, "frames_out": 0, "dropped": 0, "temporal_seeded": 0}
        self._prev: Any = None
        self._prev_mask: np.ndarray | None = None
        self._stability: list[float] = []

    # ------------------------------------------------------------------ stages
    def _capture(self, q_out) -> None:
        try:
            t = time.perf_counter()
            for frame in self.source:
                decode_ms = (time.perf_counter() - t) * 1e3
                if self.stop_event.is_set():
                    break
                self.stats["frames_in"] += 1
                self._put(q_out, (frame, {"video_decode": decode_ms, "_t_put": time.perf_counter()}))
                if self.cfg.max_frames and self.stats["frames_in"] >= self.cfg.max_frames:
                    break
                t = time.perf_counter()
        except BaseException as exc:  # noqa: BLE001 - reported after outputs are finalised
            self.errors.append(exc)
            self.stop_event.set()
        finally:
            self._put(q_out, _END, force=True)

    def _put(self, q, item, force: bool = False) -> None:
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.stop_event.is_set() and not force:
                    return
                if self.stop_event.is_set():  # make room for the end marker
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass

    def _get(self, q):
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue

    def _infer(self, q_in, q_out) -> None:
        try:
            while True:
                item = self._get(q_in)
                if item is _END:
                    break
                if self.stop_event.is_set():
                    continue  # drain
                frame, timings = item
                timings["queue_wait"] = (time.perf_counter() - timings.pop("_t_put")) * 1e3
                image = frame.image
                roi = self.cfg.roi
                view = roi.crop(image) if roi is not None else image
                kwargs = {}
                if self.cfg.iterations is not None:
                    kwargs["iterations"] = self.cfg.iterations
                if self.cfg.temporal and self._prev is not None:
                    kwargs.update(seed_prompt=self._prev, iterations=self.cfg.temporal_iterations)
                    self.stats["temporal_seeded"] += 1
                result = self.engine.segment(view, **kwargs)
                confident = result.box is not None and result.iou >= self.cfg.temporal_min_iou
                self._prev = (result.box, result.centroid) if confident else None
                mask = roi.paste(image.shape, result.mask) if roi is not None else result.mask
                if self._prev_mask is not None:
                    union = np.logical_or(mask, self._prev_mask).sum()
                    self._stability.append(1.0 if union == 0 else float(np.logical_and(mask, self._prev_mask).sum()
                                                                         / union))
                self._prev_mask = mask
                timings.update({k: v for k, v in result.timings.items() if k != "total"})
                timings["engine_total"] = result.timings["total"]
                self._put(q_out, (frame, mask, result, timings))
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)
            self.stop_event.set()
        finally:
            self._put(q_out, _END, force=True)

    def _overlay(self, q_in, q_out) -> None:
        try:
            fps_window: list[float] = []
            while True:
                item = self._get(q_in)
                if item is _END:
                    break
                frame, mask, result, timings = item
                t = time.perf_counter()
                now = time.monotonic()
                fps_window = [x for x in fps_window if now - x < 1.0] + [now]
                hud = [f"{self.engine.name} | {len(fps_window)} fps",
                       f"latency {(now - frame.timestamp) * 1e3:.0f} ms | IoU {result.iou:.2f}"]
                image = draw_overlay(frame.image, mask, self.cfg.style, hud if self.cfg.style.hud else None)
                timings["overlay"] = (time.perf_counter() - t) * 1e3
                timings["latency_capture_to_overlay"] = (time.monotonic() - frame.timestamp) * 1e3
                self._put(q_out, (frame, image, mask, result, timings))
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)
            self.stop_event.set()
        finally:
            self._put(q_out, _END, force=True)

    def _sink(self, q_in, sinks: dict) -> None:
        try:
            while True:
                item = self._get(q_in)
                if item is _END:
                    break
                frame, image, mask, result, timings = item
                t = time.perf_counter()
                if "video" in sinks:
                    sinks["video"].write(image, frame.pts)
                if "masks" in sinks:
                    if isinstance(sinks["masks"], MaskPngSink):
                        sinks["masks"].write(mask.astype(np.uint8), frame.index)
                    else:
                        sinks["masks"].write(mask.astype(np.uint8), frame.pts)
                if "window" in sinks and not sinks["window"].show(image):
                    self.stop_event.set()  # the user closed the window / pressed q
                timings["sink_write"] = (time.perf_counter() - t) * 1e3
                latency = timings.pop("latency_capture_to_overlay")
                timings["capture_to_written"] = (time.monotonic() - frame.timestamp) * 1e3
                self.report.add(index=frame.index, latency_ms=latency, stages=timings,
                                result={"iou_pred": round(float(result.iou), 4), "passes": int(result.passes),
                                        "mask_area": int(mask.sum())})
                self.stats["frames_out"] += 1
                if self.progress:
                    self.progress(1)
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)
            self.stop_event.set()

    # ------------------------------------------------------------------ run
    def _open_sinks(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        fps = self.source.fps or 15.0
        sinks: dict[str, Any] = {}
        if self.cfg.write_video:
            sinks["video"] = VideoWriterSink(self.out / "overlay.mp4", fps)
        if self.cfg.masks == "png":
            sinks["masks"] = MaskPngSink(self.out / "masks")
        elif self.cfg.masks == "video":
            sinks["masks"] = MaskVideoSink(self.out / "masks.mkv", fps)
        if self.cfg.show:
            sinks["window"] = WindowSink()
        return sinks

    def _on_signal(self, signum, _frame) -> None:
        self.stats["interrupted_by"] = signal.Signals(signum).name
        self.stop_event.set()
        self.source.close()

    def run(self) -> dict[str, Any]:
        """Process the whole source (or until stopped); returns the summary (also written to summary.json)."""
        sinks = self._open_sinks()
        live = self.source.is_live
        q_frames = _LatestQueue() if live else queue.Queue(self.cfg.queue_size)
        q_masks: queue.Queue = queue.Queue(self.cfg.queue_size)
        q_images: queue.Queue = queue.Queue(self.cfg.queue_size)
        old_handlers = {}
        if self.cfg.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        threads = [threading.Thread(target=self._capture, args=(q_frames,), name="capture", daemon=True),
                   threading.Thread(target=self._infer, args=(q_frames, q_masks), name="infer", daemon=True),
                   threading.Thread(target=self._overlay, args=(q_masks, q_images), name="overlay", daemon=True),
                   threading.Thread(target=self._sink, args=(q_images, sinks), name="sink", daemon=True)]
        self.report.start()
        t0 = time.perf_counter()
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.1)
        finally:
            self.stop_event.set()
            self.source.close()
            for t in threads:
                t.join(timeout=10)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self.report.stop()
            close_errors = []
            for sink in sinks.values():
                try:
                    sink.close()
                except Exception as exc:  # noqa: BLE001
                    close_errors.append(exc)
            summary = self._summary(time.perf_counter() - t0, q_frames)
        if self.errors:
            raise self.errors[0]
        if close_errors:
            raise close_errors[0]
        return summary

    def _summary(self, wall_s: float, q_frames) -> dict[str, Any]:
        if isinstance(q_frames, _LatestQueue):
            for frame, _ in q_frames.dropped:
                self.report.add(index=frame.index, dropped=True)
            self.stats["dropped"] = len(q_frames.dropped)
        s = self.report.summary(wall_time_s=wall_s)
        summary = {
            "source": getattr(self.source, "name", ""),
            "engine": self.engine.info(),
            "frames_in": self.stats["frames_in"],
            "frames_out": self.stats["frames_out"],
            "frames_dropped": self.stats["dropped"],
            "wall_s": wall_s,
            "fps": self.stats["frames_out"] / wall_s if wall_s > 0 else 0.0,
            "latency_ms": s.get("latency_ms"),
            "stages_ms": s.get("stages_ms"),
            "source_stats": dict(self.source.stats),
            "temporal": {"enabled": self.cfg.temporal, "seeded_frames": self.stats["temporal_seeded"],
                         "consecutive_mask_iou_mean": float(np.mean(self._stability)) if self._stability else None},
            "interrupted_by": self.stats.get("interrupted_by"),
            "errors": [f"{type(e).__name__}: {e}" for e in self.errors],
            "outputs": {"video": "overlay.mp4" if self.cfg.write_video else None,
                        "masks": {"png": "masks/", "video": "masks.mkv", "none": None}[self.cfg.masks]},
        }
        if self.cfg.report:
            self.out.mkdir(parents=True, exist_ok=True)
            self.report.write(self.out / "latency.json", self.out / "latency.csv")
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

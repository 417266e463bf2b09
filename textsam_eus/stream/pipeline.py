"""The streaming pipeline: source -> capture -> segment -> draw -> write (sinks), each stage in its own thread.

The whole topology is :meth:`StreamPipeline.compose`. Stages pass one :class:`~textsam_eus.stream.record.FrameRecord`
per frame through bounded queues, so decoding and encoding overlap inference and memory stays flat. A live source
(a capture device, or a file replayed with ``--realtime``) keeps only the newest frame when inference falls
behind: latency stays bounded, the dropped frames are counted and reported without their pixels. Files process
every frame, in order.

Every stop — end of input, a lost device, SIGINT/SIGTERM (any number of them), an error in any stage, a full
disk — finalises the outputs written so far: signals only ask the run to stop and cannot interrupt finalisation;
on a full disk a reserve file is freed to make room for it. A stop request ends the run within
``stop_timeout_s`` whatever the engine is doing: stages still busy then (an engine call that does not return) are
left behind and the outputs are finalised without their frames. ``complete`` means every frame of the input was
written: a file that ends before its stated end (a truncated DICOM) is not complete, and a signal that arrives
after the last frame was written does not make the run incomplete. ``summary.json`` is written when the run starts
(``complete: false``), refreshed every few seconds, and rewritten at the end with ``complete`` and ``stop_reason``,
so after a SIGKILL it says the run did not finish. The overlay MP4 is fragmented and plays up to the kill.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..common.screen import LayoutTracker
from ..model.config import MAX_REFINE_ITERATIONS
from ..model.errors import OptionError, UserError
from ..model.mask_metrics import mask_iou
from .base import FrameSource
from .manifest import claim
from .outdir import OutputFolder, is_disk_full
from .overlay import OverlayStyle, draw_overlay, hud_box_size, quiet_corner
from ..common.presence import PresenceGate
from .record import FrameRecord, NoSegmentation
from .report import LatencyReport, write_json_atomic
from .mask_formats import model_identity, open_mask_format_sinks, parse_mask_formats
from .roi import ROI
from .sinks import (MaskPngSink, MaskVideoSink, OutputIndexSink, OverlayPngSink, OverlayVideoSink, ReportSink,
                    Sink, WindowSink)
from .stages import FifoQueue, LatestQueue, ReorderQueue, Stage, run_stage
from .warn import one_line_warnings

HEARTBEAT_S = 2.0  # how often summary.json is refreshed during a run
MAX_ITERATIONS = MAX_REFINE_ITERATIONS  # refinement passes after the first (one bound for every layer)
MAX_WORKERS = 64
MAX_FRAMES = 1_000_000_000  # 190 days at 60 fps


def _drop_specks(mask: np.ndarray, keep: float = 0.2) -> np.ndarray:
    """``mask`` without the bits smaller than ``keep`` of its largest part (fragments at the sector's edge that
    clipping leaves behind)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    small = np.nonzero(areas < keep * areas.max())[0] + 1
    if small.size:
        mask = mask.copy()
        mask[np.isin(labels, small)] = 0
    return mask


def _wrapped(source):
    """``source`` and the sources it wraps (a ``--realtime`` replay wraps a file or folder source)."""
    for _ in range(4):
        if source is None:
            return
        yield source
        source = getattr(source, "inner", None)


def _through(source, attr: str, default):
    """``source.<attr>``, or that of the source it wraps, when it has none."""
    for s in _wrapped(source):
        value = getattr(s, attr, None)
        if value is not None and value is not False:
            return value
    return default


def input_files(source) -> list[Path]:
    """The files ``source`` reads (a video or DICOM file, the images of a folder; through a ``--realtime``
    replay): ``--overwrite`` never removes them."""
    files: list[Path] = []
    for s in _wrapped(source):
        path = getattr(s, "path", None)
        if isinstance(path, Path):
            files.append(path)
        files += [p for p in getattr(s, "files", None) or [] if isinstance(p, Path)]
    return files


class StreamError(UserError, RuntimeError):
    """A run stopped for a reason the user can fix (full disk, ...); the outputs are finalised."""


@dataclass
class PipelineConfig:
    roi: ROI | str | None = None  # a fixed ROI, "auto" (find and track the imaging sector) or None (whole frame)
    iterations: int | None = None  # refinement iterations (None: the engine's)
    temporal: bool = False  # seed the first pass with the previous frame's box/centroid when it was confident
    temporal_min_iou: float = 0.7  # predicted IoU needed to reuse a frame's box/centroid
    temporal_iterations: int = 1  # refinement passes when seeded
    queue_size: int = 4
    write_video: bool = True  # the overlay: overlay.mp4, or overlays/<stem>.png for image folders
    masks: str = "png"  # comma-separated: png, video, nifti, dicom-seg, coco; or none (stream/mask_formats.py)
    report: bool = True
    show: bool = False
    style: OverlayStyle = field(default_factory=OverlayStyle)
    max_frames: int | None = None
    handle_signals: bool = True
    overwrite: bool = False  # replace the results of an earlier run in the output folder
    disk_reserve_bytes: int = 4 << 20  # kept free to finalise the outputs on a full disk
    workers: int = 1  # parallel segment workers for files (frame-level parallelism; not with live or temporal)
    presence: bool = True  # gate outlines on the engine's calibrated presence threshold (when it has one)
    presence_threshold: float | None = None  # override the engine's threshold
    show_frames: int | None = None  # override: frames at or above the threshold before the outline shows
    hide_frames: int | None = None  # override: frames below it before the outline hides
    confident_iou: float = 0.7  # a shown outline whose predicted IoU is lower is drawn faded and dashed
    serve: str | int | None = None  # "[HOST:]PORT": a browser live view while the run lasts (stream/serve.py)
    deidentify: bool = False  # DICOM outputs: new UIDs, no patient / study identifiers
    html_report: bool = False  # report.html beside summary.json at the end (the CLI's default)
    stop_timeout_s: float = 5.0  # after a stop request, how long the stages may take to drain before the outputs
    # are finalised without them (an engine call that does not return cannot hold the run)
    model: dict | None = None  # the model's name, checkpoint and SHA-256, named by the DICOM/COCO writers
    settings: dict | None = None  # the run's settings (runs.RunSettings.to_dict()): summary.json's "settings"

    def __post_init__(self) -> None:
        self.mask_formats = parse_mask_formats(self.masks)  # raises SinkError naming the formats
        if isinstance(self.roi, str):
            if self.roi != "auto":
                raise OptionError(f"roi={self.roi!r} is invalid: use 'auto', an ROI or None")
        if self.queue_size < 1:
            raise OptionError(f"queue_size={self.queue_size} is invalid: must be >= 1")
        if self.iterations is not None and not (isinstance(self.iterations, int) and
                                                0 <= self.iterations <= MAX_ITERATIONS):
            raise OptionError(f"iterations={self.iterations} is invalid: refinement passes are 0 to "
                              f"{MAX_ITERATIONS} (the default is the model's, 2)")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise OptionError(f"workers={self.workers} is invalid: use 1 to {MAX_WORKERS}")
        if not 0 < self.stop_timeout_s <= 3600:
            raise OptionError(f"stop_timeout_s={self.stop_timeout_s} is invalid: use seconds in (0, 3600]")
        if self.workers > 1 and self.temporal:
            raise OptionError("temporal seeding needs the previous frame's result: use workers=1 with --temporal")
        if self.max_frames is not None and not 1 <= self.max_frames <= MAX_FRAMES:
            raise OptionError(f"max_frames={self.max_frames} is invalid: use 1 to {MAX_FRAMES} (or leave it out "
                              "for all)")


class StreamPipeline:
    """Run ``engine`` over ``source`` and write to ``out_dir``: overlay, masks, outputs.csv, latency.json/csv,
    summary.json."""

    def __init__(self, engine, source: FrameSource, out_dir: str | Path, config: PipelineConfig | None = None,
                 progress: Callable[[int], None] | None = None, extra_sinks: list[Sink] | None = None,
                 live_view: Sink | None = None) -> None:
        """``live_view``: an already started :class:`~textsam_eus.stream.serve.LiveViewSink` (the ``stream``
        command's, ``keep_serving``) to show this run on, instead of one started from ``config.serve``."""
        self.engine = engine
        self.extra_sinks = list(extra_sinks or [])  # more outputs (one class each), after the standard ones
        self.source = source
        self.out = Path(out_dir)
        self.cfg = config or PipelineConfig()
        self.progress = progress
        width, height = source.size
        self.layouts = LayoutTracker() if self.cfg.roi == "auto" else None
        self.gate = self._make_gate()
        self._hud_at: tuple[int, int] | None = None  # where the HUD box goes (overlay.quiet_corner, first frame)
        if isinstance(self.cfg.roi, ROI) and width and height:
            self.cfg.roi.validate(width, height)  # an ROI outside the first frame fails before any work
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.stop_reason: str | None = None
        self.signals: list[str] = []
        self.warnings: list[str] = []  # the run's and the source's (copied as they appear), printed once each
        self._source_warnings_seen = 0
        self.stats: dict[str, Any] = {"frames_in": 0, "frames_out": 0, "temporal_seeded": 0, "size_changes": 0}
        self.report: LatencyReport | None = None
        self.sinks: list[Sink] = []
        self.index_sink: OutputIndexSink | None = None
        self.folder: OutputFolder | None = None
        self._frames_queue: LatestQueue | FifoQueue | None = None
        self._prev: Any = None
        self._prev_mask: np.ndarray | None = None
        self._size: tuple[int, int] | None = None
        self._seed_key: tuple | None = None  # (frame size, layout id) the temporal seed belongs to
        self._stability = [0.0, 0]  # sum, count of consecutive-frame mask IoU
        self._fps_window: deque[float] = deque()  # draw times of the last second (the HUD's fps)
        self._finalised = False
        self._sink_lock = threading.Lock()  # the write stage's sinks vs. finalising them from the main thread
        self._sinks_closed = False
        self._closing = False  # finalisation has begun (it is never cut short)
        self._input_done = False  # the input ended by itself (or at max_frames), not by a stop request
        self.thumbnails = None  # the report's sample frames (html_report)
        self.live_view = live_view  # the --serve sink
        self._t0 = time.perf_counter()

    def _make_gate(self) -> PresenceGate:
        p = dict(getattr(self.engine, "presence", None) or {})
        threshold = self.cfg.presence_threshold if self.cfg.presence_threshold is not None else p.get("threshold")
        if not self.cfg.presence:
            threshold = None
        if getattr(self.source, "per_file_outputs", False):  # stills are unrelated: decide each one on its own
            p["show_frames"] = p["hide_frames"] = 1
        return PresenceGate(threshold, self.cfg.show_frames or p.get("show_frames", 3),
                            self.cfg.hide_frames or p.get("hide_frames", 5))

    # ------------------------------------------------------------------ topology
    def compose(self) -> list[Stage]:
        """source -> [capture] -> frames -> [segment] x workers -> masks (in order) -> [draw] -> overlays ->
        [write: sinks]. A live source's frames queue keeps only the newest frame; a file's keeps every frame."""
        q, n = self.cfg.queue_size, self.workers
        frames = LatestQueue(self._record_drop) if self.source.is_live else FifoQueue(q)
        masks = ReorderQueue(n, q) if n > 1 else FifoQueue(q)
        overlays = FifoQueue(q)
        self._frames_queue = frames
        return [Stage("capture", self._admit, self._timed_frames(), frames),
                *[Stage(f"segment{i}" if n > 1 else "segment", self._segment, frames, masks,
                        wait_key="queue_wait", shared_inbox=n > 1) for i in range(n)],
                Stage("draw", self._draw, masks, overlays),
                Stage("write", self._write, overlays, close=self._close_sinks)]

    @property
    def workers(self) -> int:
        """Segment workers in use: ``cfg.workers`` for files, 1 for live sources (latency comes first)."""
        return 1 if self.source.is_live else self.cfg.workers

    def _open_sinks(self) -> list[Sink]:
        fps = self.source.fps or 15.0
        per_file = bool(getattr(self.source, "per_file_outputs", False))
        sinks: list[Sink] = []
        formats = self.cfg.mask_formats
        try:
            if self.live_view is not None:  # started by run(), before the output folder
                sinks.append(self.live_view)
            if self.cfg.write_video:
                sinks.append(OverlayPngSink(self.out) if per_file else OverlayVideoSink(self.out, fps))
            if "png" in formats:
                sinks.append(MaskPngSink(self.out))
            if "video" in formats:
                sinks.append(MaskVideoSink(self.out, fps))
            sinks += open_mask_format_sinks(formats, self.out, fps=fps, source=self.source,
                                            model=self.cfg.model or model_identity(self.engine),
                                            deidentify=self.cfg.deidentify, run_state=self._stop_reason)
            if self.cfg.html_report:
                from .report_html import ThumbnailSink

                self.thumbnails = ThumbnailSink()
                sinks.append(self.thumbnails)
            if self.cfg.show:
                sinks.append(WindowSink())
        except BaseException:
            for sink in sinks:  # e.g. the live view's server thread
                sink.close()
            raise
        sinks += self.extra_sinks
        self.index_sink = OutputIndexSink(self.out)
        sinks.append(self.index_sink)
        return sinks

    def _counters(self) -> dict[str, int]:
        dropped = self._frames_queue.dropped if isinstance(self._frames_queue, LatestQueue) else 0
        return {"frames_in": self.stats["frames_in"], "frames_out": self.stats["frames_out"],
                "frames_dropped": dropped}

    # ------------------------------------------------------------------ stages
    def _timed_frames(self):
        """The source's frames, each with its decode/grab time; stops at ``max_frames``."""
        it = iter(self.source)
        while True:
            t = time.perf_counter()
            try:
                record = next(it)
            except StopIteration:
                self._input_done = _through(self.source, "exhausted", False)
                return
            record.timings["video_decode"] = (time.perf_counter() - t) * 1e3
            yield record
            if self.cfg.max_frames and self.stats["frames_in"] >= self.cfg.max_frames:
                self.stop_reason = self.stop_reason or f"max frames ({self.cfg.max_frames})"
                self._input_done = True
                return

    def _admit(self, rec: FrameRecord) -> FrameRecord:
        rec.seq = self.stats["frames_in"]
        self.stats["frames_in"] += 1
        if self.layouts is not None:  # in frame order, before any parallel worker
            t = time.perf_counter()
            rec.layout = self.layouts.update(rec.image)
            rec.timings["layout_detect"] = (time.perf_counter() - t) * 1e3
            rec.info["layout"] = rec.layout.short() if rec.layout is not None else "none"
        return rec

    def _record_drop(self, rec: FrameRecord) -> None:
        self.report.add(index=rec.index, dropped=True, timestamp=rec.timestamp)

    def _roi_for(self, rec: FrameRecord) -> ROI | None:
        roi = self.cfg.roi
        if not isinstance(roi, ROI) or roi.fits(rec.width, rec.height):
            return roi
        self.warn(f"ROI {roi} does not fit {rec.width}x{rec.height} frames: those frames are segmented whole")
        rec.info["roi"] = "full frame"
        return None

    def _segment(self, rec: FrameRecord) -> FrameRecord:
        if self.stop_event.is_set():
            return None
        layout = rec.layout
        key = (rec.size, layout.id if layout is not None else None)
        if self.cfg.temporal and key != self._seed_key:  # no seeding across a size or layout change
            self._seed_key, self._prev = key, None
        if self.layouts is not None:
            if layout is None:  # no imaging sector on the screen (black, frozen blank): nothing to segment
                rec.result, rec.mask = NoSegmentation("no imaging sector"), np.zeros(rec.image.shape[:2], np.uint8)
                return rec
            roi, view = None, layout.crop(rec.image)
        else:
            roi = self._roi_for(rec)
            view = roi.crop(rec.image) if roi is not None else rec.image
        kwargs: dict[str, Any] = {}
        if self.cfg.iterations is not None:
            kwargs["iterations"] = self.cfg.iterations
        if self.cfg.temporal and self._prev is not None:
            kwargs.update(seed_prompt=self._prev, iterations=self.cfg.temporal_iterations)
            self.stats["temporal_seeded"] += 1
        result = self.engine.segment(view, **kwargs)
        confident = result.box is not None and bool(np.isfinite(result.iou)) and result.iou >= self.cfg.temporal_min_iou
        self._prev = (result.box, result.centroid) if confident else None
        mask = np.asarray(result.mask).astype(np.uint8, copy=False)
        if layout is not None:
            mask = _drop_specks(layout.paste(mask))  # back in the full screen; nothing outside the imaging sector
        elif roi is not None:
            mask = roi.paste(rec.image.shape, mask)
        rec.result, rec.mask = result, mask
        rec.timings.update({k: v for k, v in result.timings.items() if k != "total"})
        rec.timings["engine_total"] = result.timings.get("total", 0.0)
        return rec

    def _track(self, rec: FrameRecord) -> None:
        """Size changes and the mask IoU between consecutive frames (in frame order)."""
        if rec.size != self._size:
            if self._size is not None:
                self.stats["size_changes"] += 1
                rec.info["size_changed"] = f"{self._size[0]}x{self._size[1]}->{rec.width}x{rec.height}"
            self._size, self._prev_mask = rec.size, None
        if self._prev_mask is not None:
            self._stability[0] += mask_iou(rec.mask, self._prev_mask)
            self._stability[1] += 1
        self._prev_mask = rec.mask

    def _decide(self, rec: FrameRecord) -> tuple[bool, list[str]]:
        """Presence over time: clears the mask of a frame shown as tumour-free; (faded, HUD line)."""
        result = rec.result
        score = getattr(result, "presence", None)
        decision = self.gate.update(score)
        rec.info["presence"] = round(float(score), 4) if score is not None and np.isfinite(score) else None
        rec.info["decision"] = decision.state
        if isinstance(result, NoSegmentation):
            rec.mask[:] = 0
            return False, [result.reason]
        if not decision.shown or not rec.mask.any():
            rec.mask[:] = 0
            return False, ["no tumour detected"]
        iou = float(result.iou)
        faded = decision.state == "holding" or not (np.isfinite(iou) and iou >= self.cfg.confident_iou)
        label = ("tumour?" if faded else "tumour") + (f" (presence {score:.2f})" if self.gate.enabled else "")
        return faded, [label]

    def _hud_lines(self, rec: FrameRecord, now: float, status: list[str]) -> list[str]:
        """Engine and fps; then, for a live source, capture-to-overlay latency (what the endoscopist sees), for a
        file the model's time per frame (its queueing is no latency anyone waits for); the IoU; the status."""
        iou = rec.result.iou
        iou_text = f"IoU {iou:.2f}" if np.isfinite(iou) else "IoU n/a"
        if self.source.is_live:
            timing = f"latency {(now - rec.timestamp) * 1e3:.0f} ms"
        else:
            timing = f"model {rec.timings.get('engine_total', 0.0):.0f} ms"
        return [f"{self.engine.name} | {len(self._fps_window)} fps", f"{timing} | {iou_text}", *status]

    def _draw(self, rec: FrameRecord) -> FrameRecord:
        faded, status = self._decide(rec)
        rec.info["mask_area"] = int(np.count_nonzero(rec.mask))  # what is written; the sinks report it
        self._track(rec)
        t = time.perf_counter()
        now = time.monotonic()
        self._fps_window.append(now)
        while now - self._fps_window[0] >= 1.0:
            self._fps_window.popleft()
        hud = None
        if self.cfg.style.hud:
            hud = self._hud_lines(rec, now, status)
            if self._hud_at is None:  # chosen on the first frame, then kept: the HUD does not jump around
                self._hud_at = quiet_corner(rec.image, hud_box_size([*hud, "tumour? (presence 0.00)"],
                                                                    self.cfg.style))
        rec.overlay = draw_overlay(rec.image, rec.mask, self.cfg.style, hud, faded=faded, hud_at=self._hud_at)
        rec.timings["overlay"] = (time.perf_counter() - t) * 1e3
        rec.timings["latency_capture_to_overlay"] = (time.monotonic() - rec.timestamp) * 1e3
        return rec

    def _write(self, rec: FrameRecord) -> None:
        with self._sink_lock:
            if self._sinks_closed:  # finalised without this stage (it did not stop in time)
                return None
            t = time.perf_counter()
            for sink in self.sinks:
                sink.write(rec)
                if sink.stop_requested:
                    self.stop_reason = self.stop_reason or "window closed"
                    self.stop_event.set()
            rec.timings["sink_write"] = (time.perf_counter() - t) * 1e3
            rec.timings["capture_to_written"] = (time.monotonic() - rec.timestamp) * 1e3
            self.report_sink.write(rec)
            self.stats["frames_out"] += 1
            if self.progress:
                self.progress(1)
        rec.image = rec.overlay = rec.mask = None  # nothing of the frame outlives its write
        return None

    def _close_sinks(self, timeout: float | None = None) -> None:
        """Finalise every sink (in the write stage's thread; from the main thread when that stage did not stop in
        time, waiting at most ``timeout`` for a write in progress)."""
        self._closing = True
        if not self._sink_lock.acquire(timeout=-1 if timeout is None else timeout):
            self.warn(f"a sink write did not return within {timeout:g} s: the outputs could not be finalised")
            return
        try:
            if self._sinks_closed:
                return
            self._sinks_closed = True
            if any(is_disk_full(e) for e in self.errors) and self.folder is not None:
                self.folder.release_reserve()  # room to finalise what was written
            for sink in self.sinks:
                if sink is self.index_sink:
                    continue
                try:
                    sink.close()
                except BaseException as exc:  # noqa: BLE001 - the others still close
                    self.errors.append(exc)
            if self.index_sink is not None:
                self._close_index()
            self._finalised = True
        finally:
            self._sink_lock.release()

    def _close_index(self) -> None:
        """outputs.csv last: rows whose frame a video lost (cut back to its last whole fragment on a full disk)
        say so, then the rows of the inputs that gave no frame."""
        reason = "disk full" if any(is_disk_full(e) for e in self.errors) else "not written"
        try:
            for sink in self.sinks:
                lost = sink.lost_rows() if hasattr(sink, "lost_rows") else None
                if lost is not None:
                    column, first = lost
                    self.index_sink.mark_lost(column, first, f"{column} lost ({reason})")
            reasons = _through(self.source, "skip_reasons", None) or {}
            for index, path in getattr(self.source, "unreadable", []) or []:
                self.index_sink.add_missing(index, path, reasons.get(index, "unreadable"))
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)
        try:
            self.index_sink.close()
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        self.signals.append(name)
        if len(self.signals) == 1:
            print(f"\n{name}: stopping; finalising the outputs (further signals are ignored until done)",
                  file=sys.stderr, flush=True)
        self.stop_event.set()
        self.source.close()

    def request_stop(self, reason: str) -> None:
        """Ask the run to stop, from any thread (a worker told to stop by its driver): the outputs written so far
        are finalised and ``summary.json`` says ``complete: false`` with ``reason``."""
        self.stop_reason = self.stop_reason or reason
        self.stop_event.set()
        self.source.close()

    def _install_signal_handlers(self) -> dict:
        old = {}
        if self.cfg.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self._on_signal)
        return old

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        """Process the whole source (or until stopped); returns the summary (also written to summary.json).

        Raises the first stage error after the outputs are finalised (:class:`StreamError` for a full disk).
        """
        if self.live_view is not None:
            self.live_view.attach(self._counters)
        elif self.cfg.serve is not None:  # first: a port in use is an error before anything is written
            from .serve import LiveViewSink

            self.live_view = LiveViewSink(self.cfg.serve, counters=self._counters)
        old_handlers = self._install_signal_handlers()  # before any output exists: nothing can be half-written
        try:
            with one_line_warnings(self.warn), \
                    OutputFolder(self.out, overwrite=self.cfg.overwrite, reserve_bytes=self.cfg.disk_reserve_bytes,
                                 protect=input_files(self.source)) as folder:
                self.folder = folder
                summary = self._run_in(folder)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if self.live_view is not None:
                self.live_view.close()  # idempotent: normally closed with the other sinks (an outside one only
                # ends the run: its owner stops it)
        disk = next((e for e in self.errors if is_disk_full(e)), None)
        if disk is not None:
            raise StreamError(f"no space left on the disk of {self.out} ({disk}); {summary['frames_out']} frames "
                              "were written and finalised (summary.json says complete: false); free some space or "
                              "choose another --out") from None
        if self.errors:
            raise self.errors[0]
        return summary

    def _run_in(self, folder: OutputFolder) -> dict[str, Any]:
        self.report = LatencyReport(name=getattr(self.source, "name", ""), spool=self.out / "frames.jsonl")
        self.report_sink = ReportSink(self.report)
        stages: list[Stage] = []
        left_behind = False
        try:
            self.sinks = self._open_sinks()
            self._poll_source_warnings()
            self._write_summary(running=True)
            stages = self.compose()
            self.report.start()
            self._t0 = time.perf_counter()
            for st in stages:
                st.thread = threading.Thread(target=run_stage, args=(st, self.stop_event, self.errors),
                                             name=st.name, daemon=True)
                st.thread.start()
            left_behind = self._wait(stages)
        finally:
            self.stop_event.set()
            self.source.close()
            end = time.monotonic() + (1.0 if left_behind else self.cfg.stop_timeout_s)
            for st in stages:
                if st.thread is not None:
                    st.thread.join(timeout=max(0.0, end - time.monotonic()))
            if not stages:  # failed before the stages ran: close what was opened
                self._close_sinks()
            if left_behind:  # what a stage left behind may still report an error: not this run's any more
                self.errors = list(self.errors)
            self._poll_source_warnings()
            self.report.stop()
            summary = self._write_summary(running=False)
        return summary

    def _wait(self, stages: list[Stage]) -> bool:
        """Wait for the write stage (which finalises the outputs), refreshing summary.json. After a stop request
        the stages get ``stop_timeout_s`` to drain; then the outputs are finalised from here without the stages
        still busy (True: stages were left behind)."""
        writer = stages[-1].thread
        last_beat, deadline = time.monotonic(), None
        while writer.is_alive():
            writer.join(timeout=0.1)
            self._poll_source_warnings()
            now = time.monotonic()
            if deadline is None and self.stop_event.is_set():
                deadline = now + self.cfg.stop_timeout_s
            if deadline is not None and now > deadline and not self._closing and writer.is_alive():
                busy = [st.name for st in stages if st.thread.is_alive() and st is not stages[-1]]
                self.warn(f"{', '.join(busy) or 'the writer'} did not stop within {self.cfg.stop_timeout_s:g} s of "
                          "the stop request (an engine or source call still running): the outputs were finalised "
                          "without the frames in flight")
                self._close_sinks(timeout=10.0)
                return True
            if now - last_beat > HEARTBEAT_S:
                self._write_summary(running=True)
                last_beat = now
        return False

    # ------------------------------------------------------------------ warnings
    def warn(self, message: str) -> None:
        """Record a warning for summary.json and print it once, as one line."""
        if message not in self.warnings:
            self.warnings.append(message)
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def _poll_source_warnings(self) -> None:
        """The source's warnings, also those raised while it is read (a truncated file, a skipped still)."""
        found = list(getattr(self.source, "warnings", None) or [])
        for w in found[self._source_warnings_seen:]:
            self.warn(w)
        self._source_warnings_seen = len(found)

    # ------------------------------------------------------------------ summary
    def _stop_reason(self) -> tuple[bool, str]:
        if self.errors:
            e = self.errors[0]
            if is_disk_full(e):
                return False, f"disk full: {e}"
            return False, f"error: {type(e).__name__}: {e}"
        dropped = self._frames_queue.dropped if isinstance(self._frames_queue, LatestQueue) else 0
        written = self.stats["frames_out"] + dropped >= self.stats["frames_in"]
        if self.signals and not (written and self._input_done):
            # a signal stopped the input, or frames that were already read (also after the input had ended); one
            # that came after the last frame was written stops nothing
            return False, f"stopped by {self.signals[0]}"
        early = _through(self.source, "ended_early", None)
        if early:
            return False, f"input ended early: {early}"
        if self.stop_reason:
            return self.stop_reason.startswith("max frames"), self.stop_reason
        if self.source.stats.get("lost"):
            return False, "capture device lost (reconnects exhausted)"
        return True, "end of input"

    def summary(self, running: bool = False) -> dict[str, Any]:
        wall_s = time.perf_counter() - self._t0
        s = self.report.summary(wall_time_s=wall_s) if self.report is not None else {}
        if running:
            complete, reason = False, ("running (if this stays, the run was killed or crashed: the outputs up to "
                                       "the last second play; frames.jsonl has the per-frame records)")
        else:
            complete, reason = self._stop_reason()
        dropped = self._frames_queue.dropped if isinstance(self._frames_queue, LatestQueue) else 0
        outputs: dict[str, Any] = {}
        for sink in self.sinks:
            outputs.update(sink.describe())
        stab_sum, stab_n = self._stability
        unreadable = getattr(self.source, "unreadable", []) or []
        return {
            "complete": complete,
            "stop_reason": reason,
            "finalised": self._finalised and not running,
            "source": getattr(self.source, "name", ""),
            "live": bool(self.source.is_live),
            "engine": self.engine.info(),
            "frames_in": self.stats["frames_in"],
            "frames_out": self.stats["frames_out"],
            "frames_dropped": dropped,
            "wall_s": wall_s,
            "fps": self.stats["frames_out"] / wall_s if wall_s > 0 else 0.0,
            "latency_ms": s.get("latency_ms"),
            "stages_ms": s.get("stages_ms"),
            "hud_timing": ({"shown": "latency", "what": "capture to overlay (latency_ms): what a live user sees"}
                           if self.source.is_live else
                           {"shown": "model", "what": "the model's time per frame (stages_ms.engine_total); "
                            "latency_ms of a file run is queueing behind the model, which no live user waits for"}),
            "source_stats": {k: v for k, v in self.source.stats.items()},
            "size_changes": self.stats["size_changes"],
            "roi": str(self.cfg.roi) if self.cfg.roi is not None else None,
            "layout": self.layouts.describe() if self.layouts is not None else None,
            "presence": self.gate.describe(),
            "workers": self.workers,
            "temporal": {"enabled": self.cfg.temporal, "seeded_frames": self.stats["temporal_seeded"],
                         "consecutive_mask_iou_mean": stab_sum / stab_n if stab_n else None},
            "warnings": list(self.warnings),
            "unreadable_files": [f for _, f in unreadable[:50]],
            "unreadable_count": len(unreadable),
            "interrupted_by": self.signals[0] if self.signals else None,
            "deidentified": bool(self.cfg.deidentify),
            "errors": [f"{type(e).__name__}: {e}" for e in self.errors],
            "outputs": outputs,
            **({"settings": dict(self.cfg.settings)} if self.cfg.settings is not None else {}),
        }

    def _write_report_html(self, summary: dict[str, Any]) -> None:
        from .report_html import REPORT_NAME, write_report_html

        try:
            claim(self.out / REPORT_NAME)
            write_report_html(self.out, summary, self.thumbnails or [])
            summary["outputs"]["report"] = REPORT_NAME
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose the run's other outputs
            summary["warnings"].append(f"report.html not written: {type(exc).__name__}: {exc}")

    def _write_summary(self, running: bool) -> dict[str, Any]:
        summary = self.summary(running=running)
        if not self.cfg.report:
            return summary
        try:
            if not running and self.report is not None:
                self.report.write(self.out / "latency.json", self.out / "latency.csv")
                self.report.close(remove_spool=True)
                summary["outputs"].update({"latency": ["latency.json", "latency.csv"]})
                if self.cfg.html_report:
                    self._write_report_html(summary)
            write_json_atomic(self.out / "summary.json", summary)
        except OSError as exc:
            if running or not is_disk_full(exc):
                raise
            self.errors.append(exc)  # the per-frame records stay in frames.jsonl
            summary["complete"], summary["stop_reason"] = False, f"disk full: {exc}"
            try:
                write_json_atomic(self.out / "summary.json", summary)
            except OSError:
                pass
        return summary

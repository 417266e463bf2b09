"""The streaming pipeline: source -> capture -> segment -> draw -> write (sinks), each stage in its own thread.

The whole topology is :meth:`StreamPipeline.compose`: the stages (:mod:`textsam_eus.stream.stages`, one small class
each that owns its state and describes itself) joined by explicit queues of one
:class:`~textsam_eus.stream.record.FrameRecord` per frame, so decoding and encoding overlap inference and memory
stays flat. A live source (a capture device, or a file replayed with ``--realtime``) keeps only the newest frame when
inference falls behind: latency stays bounded, the dropped frames are counted and reported without their pixels.
Files process every frame, in order. :class:`StreamPipeline` composes the stages and supervises them
(:class:`~textsam_eus.stream.supervisor.Supervisor`); what they share is one
:class:`~textsam_eus.stream.control.RunControl`; ``summary.json`` is laid out by
:class:`~textsam_eus.stream.summary.RunSummary`.

Every stop — end of input, a lost device, SIGINT/SIGTERM (any number of them), an error in any stage, a full
disk — finalises the outputs written so far: signals only ask the run to stop and cannot interrupt finalisation;
on a full disk a reserve file is freed to make room for it. A stop request ends the run within
``stop_timeout_s`` whatever the engine is doing: stages still busy then (an engine call that does not return) are
left behind and the outputs are finalised without their frames. ``summary.json`` is written when the run starts
(``complete: false``), refreshed every few seconds, and rewritten at the end with ``complete`` and ``stop_reason``,
so after a SIGKILL it says the run did not finish. The overlay MP4 is fragmented and plays up to the kill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..model.config import MAX_REFINE_ITERATIONS
from ..model.errors import OptionError, UserError
from .base import FrameSource, input_files
from .control import RunControl
from .outdir import OutputFolder
from .overlay import OverlayStyle
from .roi import ROI
from .sinks.base import Sink
from .sinks.registry import SinkRequest, model_identity, parse_mask_formats
from .stages import FifoQueue, LatestQueue, ReorderQueue, Stage
from .stages.capture import CaptureStage
from .stages.draw import DrawStage
from .stages.presence import PresencePolicy
from .stages.segment import SegmentStage
from .stages.write import WriteStage
from .summary import RunParts, RunSummary
from .supervisor import Supervisor
from .warn import one_line_warnings

MAX_ITERATIONS = MAX_REFINE_ITERATIONS  # refinement passes after the first (one bound for every layer)
MAX_WORKERS = 64
MAX_FRAMES = 1_000_000_000  # 190 days at 60 fps


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
    masks: str = "png"  # comma-separated: png, video, nifti, dicom-seg, coco; or none (stream/sinks/registry.py)
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
    serve: str | int | None = None  # "[HOST:]PORT": a browser live view while the run lasts (stream/view/live_view.py)
    deidentify: bool = False  # DICOM outputs: new UIDs, no patient / study identifiers
    html_report: bool = False  # report.html beside summary.json at the end (the CLI's default)
    stop_timeout_s: float = 5.0  # after a stop request, how long the stages may take to drain before the outputs
    # are finalised without them (an engine call that does not return cannot hold the run)
    model: dict | None = None  # the model's name, checkpoint and SHA-256, named by the DICOM/COCO writers
    settings: dict | None = None  # the run's settings: written to summary.json as "settings" when given

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
        if self.settings is not None and not isinstance(self.settings, dict):
            raise OptionError(f"settings={self.settings!r} is invalid: use a dict of the run's settings (JSON "
                              "values) or None")
        if self.max_frames is not None and not 1 <= self.max_frames <= MAX_FRAMES:
            raise OptionError(f"max_frames={self.max_frames} is invalid: use 1 to {MAX_FRAMES} (or leave it out "
                              "for all)")


class StreamPipeline:
    """Run ``engine`` over ``source`` and write to ``out_dir``: overlay, masks, outputs.csv, latency.json/csv,
    summary.json."""

    def __init__(self, engine, source: FrameSource, out_dir: str | Path, config: PipelineConfig | None = None,
                 progress: Callable[[int], None] | None = None, extra_sinks: list[Sink] | None = None,
                 live_view: Sink | None = None) -> None:
        """``live_view``: an already started :class:`~textsam_eus.stream.view.live_view.LiveViewSink` (the
        ``stream`` command's, ``keep_serving``) to show this run on, instead of one started from ``config.serve``;
        ``extra_sinks``: more outputs (one class each), after the standard ones."""
        self.engine = engine
        self.source = source
        self.out = Path(out_dir)
        self.cfg = cfg = config or PipelineConfig()
        self.extra_sinks = list(extra_sinks or [])
        self.live_view = live_view  # the --view / --serve sink
        width, height = source.size
        if isinstance(cfg.roi, ROI) and width and height:
            cfg.roi.validate(width, height)  # an ROI outside the first frame fails before any work
        auto = cfg.roi == "auto"
        self.control = RunControl(on_stop=source.close)
        self.capture = CaptureStage(source, self.control, max_frames=cfg.max_frames, auto_layout=auto)
        self.segment = SegmentStage(engine, self.control, roi=cfg.roi, auto_layout=auto, iterations=cfg.iterations,
                                    temporal=cfg.temporal, temporal_min_iou=cfg.temporal_min_iou,
                                    temporal_iterations=cfg.temporal_iterations)
        self.presence = PresencePolicy(engine, source, enabled=cfg.presence, threshold=cfg.presence_threshold,
                                       show_frames=cfg.show_frames, hide_frames=cfg.hide_frames,
                                       confident_iou=cfg.confident_iou)
        self.draw = DrawStage(engine, source, self.presence, cfg.style)
        self.writer = WriteStage(source, self.control, progress)
        self.summary_writer = RunSummary(
            self.out, RunParts(engine, source, self.control, self.capture, self.segment, self.presence, self.draw,
                               self.writer, self.workers),
            roi=cfg.roi, temporal=cfg.temporal, deidentify=cfg.deidentify, report=cfg.report,
            html_report=cfg.html_report, settings=cfg.settings)
        self.supervisor = Supervisor(self.control, cfg.stop_timeout_s, heartbeat=lambda: self._write_summary(True),
                                     poll=self._poll_source_warnings, closing=lambda: self.writer.closing,
                                     finalise=lambda timeout=None: self._close_sinks(timeout=timeout))

    # ------------------------------------------------------------------ topology
    def compose(self) -> list[Stage]:
        """source -> [capture] -> frames -> [segment] x workers -> masks (in order) -> [draw] -> overlays ->
        [write: sinks]. A live source's frames queue keeps only the newest frame; a file's keeps every frame."""
        q, n = self.cfg.queue_size, self.workers
        frames = LatestQueue(self.summary_writer.record_drop) if self.source.is_live else FifoQueue(q)
        masks = ReorderQueue(n, q) if n > 1 else FifoQueue(q)
        overlays = FifoQueue(q)
        self.capture.outbox = frames
        return [Stage("capture", self.capture.admit, self.capture.frames(), frames),
                *[Stage(f"segment{i}" if n > 1 else "segment", self.segment, frames, masks,
                        wait_key="queue_wait", shared_inbox=n > 1) for i in range(n)],
                Stage("draw", self.draw, masks, overlays),
                Stage("write", self.writer, overlays, close=self._close_sinks)]

    @property
    def workers(self) -> int:
        """Segment workers in use: ``cfg.workers`` for files, 1 for live sources (latency comes first)."""
        return 1 if self.source.is_live else self.cfg.workers

    def _sink_request(self) -> SinkRequest:
        """What the write stage's fan-out is opened for (:mod:`textsam_eus.stream.sinks.registry`)."""
        cfg = self.cfg
        return SinkRequest(self.out, self.source, masks=cfg.mask_formats, overlay=cfg.write_video,
                           html_report=cfg.html_report, show=cfg.show, live_view=self.live_view,
                           model=cfg.model or model_identity(self.engine), deidentify=cfg.deidentify,
                           run_state=self.summary_writer.outcome)

    # ------------------------------------------------------------------ what the stages share
    @property
    def stop_event(self):
        return self.control.stop_event

    @property
    def report(self):
        """The run's latency report (its per-frame records), once the run has started."""
        return self.summary_writer.report

    def warn(self, message: str) -> None:
        """Record a warning for summary.json and print it once, as one line."""
        self.control.warn(message)

    def request_stop(self, reason: str) -> None:
        """Ask the run to stop, from any thread (a worker told to stop by its driver): the outputs written so far
        are finalised and ``summary.json`` says ``complete: false`` with ``reason``."""
        self.control.request_stop(reason)

    def _counters(self) -> dict[str, int]:
        return {"frames_in": self.capture.frames_in, "frames_out": self.writer.frames_out,
                "frames_dropped": self.capture.dropped}

    def _poll_source_warnings(self) -> None:
        self.control.poll_source_warnings(self.source)

    def _close_sinks(self, timeout: float | None = None) -> None:
        """Finalise every sink (in the write stage's thread; from the main thread when that stage did not stop in
        time, waiting at most ``timeout`` for a write in progress)."""
        self.writer.close(timeout=timeout)

    def summary(self, running: bool = False) -> dict[str, Any]:
        return self.summary_writer.summary(running=running)

    def _write_summary(self, running: bool) -> dict[str, Any]:
        return self.summary_writer.write(running=running)

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        """Process the whole source (or until stopped); returns the summary (also written to summary.json).

        Raises the first stage error after the outputs are finalised (:class:`StreamError` for a full disk).
        """
        if self.live_view is not None:
            self.live_view.attach(self._counters)
        elif self.cfg.serve is not None:  # first: a port in use is an error before anything is written
            from .view.live_view import LiveViewSink

            self.live_view = LiveViewSink(self.cfg.serve, counters=self._counters)
        try:
            # signal handlers before any output exists (nothing can be half-written), restored after finalisation
            with self.control.signals_handled(self.cfg.handle_signals):
                with one_line_warnings(self.warn), \
                        OutputFolder(self.out, overwrite=self.cfg.overwrite, reserve_bytes=self.cfg.disk_reserve_bytes,
                                     protect=input_files(self.source)) as folder:
                    summary = self._run_in(folder)
        finally:
            if self.live_view is not None:
                self.live_view.close()  # idempotent: normally closed with the other sinks (an outside one only
                # ends the run: its owner stops it)
        disk = self.control.disk_full()
        if disk is not None:
            raise StreamError(f"no space left on the disk of {self.out} ({disk}); {summary['frames_out']} frames "
                              "were written and finalised (summary.json says complete: false); free some space or "
                              "choose another --out") from None
        if self.control.errors:
            raise self.control.errors[0]
        return summary

    def _run_in(self, folder: OutputFolder) -> dict[str, Any]:
        report = self.summary_writer.open_report()
        stages: list[Stage] = []
        left_behind = False
        try:
            self.writer.open(self._sink_request(), folder, report, extra=self.extra_sinks)
            self._poll_source_warnings()
            self._write_summary(running=True)
            stages = self.compose()
            report.start()
            self.summary_writer.start_clock()
            self.supervisor.start(stages)
            left_behind = self.supervisor.wait(stages)
        finally:
            self.control.stop_event.set()
            self.source.close()
            self.supervisor.join(stages, left_behind)
            if not stages:  # failed before the stages ran: close what was opened
                self._close_sinks()
            self._poll_source_warnings()
            report.stop()
            summary = self._write_summary(running=False)
        return summary

"""A run's account of itself: ``summary.json`` (its layout is here, in one place), ``latency.json/csv`` and
``report.html``.

``summary.json`` is written when the run starts (``complete: false``), refreshed every few seconds, and rewritten
at the end with ``complete`` and ``stop_reason``, so after a SIGKILL it says the run did not finish. ``complete``
means every frame of the input was written: a file that ends before its stated end (a truncated DICOM) is not
complete, and a signal that arrives after the last frame was written does not make the run incomplete.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import FrameSource, through
from .control import RunControl
from .manifest import claim
from .outdir import is_disk_full
from .record import FrameRecord
from .sinks.report import LatencyReport, write_json_atomic
from .stages.capture import CaptureStage
from .stages.draw import DrawStage
from .stages.presence import PresencePolicy
from .stages.segment import SegmentStage
from .stages.write import WriteStage

__all__ = ["RunParts", "RunSummary", "RUNNING_REASON"]

RUNNING_REASON = ("running (if this stays, the run was killed or crashed: the outputs up to the last second play; "
                  "frames.jsonl has the per-frame records)")


@dataclass
class RunParts:
    """What a summary reads: the run's engine, source and control, and its stages (each describes itself)."""

    engine: Any
    source: FrameSource
    control: RunControl
    capture: CaptureStage
    segment: SegmentStage
    presence: PresencePolicy
    draw: DrawStage
    writer: WriteStage
    workers: int


class RunSummary:
    """Owns the latency report and the run's clock; :meth:`summary` lays out ``summary.json``, :meth:`write`
    writes it (at the end with latency.json/csv and, with ``html_report``, report.html; a full disk then is
    recorded, not raised). ``settings``: written as ``"settings"`` when given (the run's settings)."""

    def __init__(self, out: Path, parts: RunParts, *, roi=None, temporal: bool = False, deidentify: bool = False,
                 report: bool = True, html_report: bool = False, settings: dict | None = None) -> None:
        self.out = Path(out)
        self.parts = parts
        self.roi = roi
        self.temporal = temporal
        self.deidentify = deidentify
        self.write_files = report
        self.html_report = html_report
        self.settings = settings
        self.report: LatencyReport | None = None
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ the latency report
    def open_report(self) -> LatencyReport:
        self.report = LatencyReport(name=getattr(self.parts.source, "name", ""), spool=self.out / "frames.jsonl")
        return self.report

    def start_clock(self) -> None:
        self._t0 = time.perf_counter()

    def record_drop(self, rec: FrameRecord) -> None:
        """A live source's frame replaced before it was segmented: a record without pixels."""
        self.report.add(index=rec.index, dropped=True, timestamp=rec.timestamp)

    # ------------------------------------------------------------------ the outcome
    def outcome(self) -> tuple[bool, str]:
        """(complete, stop reason) of the run so far."""
        p, c = self.parts, self.parts.control
        if c.errors:
            e = c.errors[0]
            if is_disk_full(e):
                return False, f"disk full: {e}"
            return False, f"error: {type(e).__name__}: {e}"
        written = p.writer.frames_out + p.capture.dropped >= p.capture.frames_in
        if c.signals and not (written and p.capture.input_done):
            # a signal stopped the input, or frames that were already read (also after the input had ended); one
            # that came after the last frame was written stops nothing
            return False, f"stopped by {c.signals[0]}"
        early = through(p.source, "ended_early", None)
        if early:
            return False, f"input ended early: {early}"
        if c.reason:
            return c.reason.startswith("max frames"), c.reason
        if p.source.stats.get("lost"):
            return False, "capture device lost (reconnects exhausted)"
        return True, "end of input"

    # ------------------------------------------------------------------ the layout
    def summary(self, running: bool = False) -> dict[str, Any]:
        p, c = self.parts, self.parts.control
        wall_s = time.perf_counter() - self._t0
        s = self.report.summary(wall_time_s=wall_s) if self.report is not None else {}
        complete, reason = (False, RUNNING_REASON) if running else self.outcome()
        captured, written, drawn = p.capture.describe(), p.writer.describe(), p.draw.describe()
        unreadable = getattr(p.source, "unreadable", []) or []
        live = p.source.is_live
        summary = {
            "complete": complete,
            "stop_reason": reason,
            "finalised": p.writer.finalised and not running,
            "source": getattr(p.source, "name", ""),
            "live": bool(live),
            "engine": p.engine.info(),
            "frames_in": captured["frames_in"],
            "frames_out": written["frames_out"],
            "frames_dropped": captured["frames_dropped"],
            "wall_s": wall_s,
            "fps": written["frames_out"] / wall_s if wall_s > 0 else 0.0,
            "latency_ms": s.get("latency_ms"),
            "stages_ms": s.get("stages_ms"),
            "hud_timing": ({"shown": "latency", "what": "capture to overlay (latency_ms): what a live user sees"}
                           if live else
                           {"shown": "model", "what": "the model's time per frame (stages_ms.engine_total); "
                            "latency_ms of a file run is queueing behind the model, which no live user waits for"}),
            "source_stats": {k: v for k, v in p.source.stats.items()},
            "size_changes": drawn["size_changes"],
            "roi": str(self.roi) if self.roi is not None else None,
            "layout": captured["layout"],
            "presence": p.presence.describe(),
            "workers": p.workers,
            "temporal": {"enabled": self.temporal, **p.segment.describe(),
                         "consecutive_mask_iou_mean": drawn["consecutive_mask_iou_mean"]},
            "warnings": list(c.warnings),
            "unreadable_files": [f for _, f in unreadable[:50]],
            "unreadable_count": len(unreadable),
            "interrupted_by": c.signals[0] if c.signals else None,
            "deidentified": bool(self.deidentify),
            "errors": [f"{type(e).__name__}: {e}" for e in c.errors],
            "outputs": written["outputs"],
        }
        if self.settings is not None:
            summary["settings"] = dict(self.settings)
        return summary

    # ------------------------------------------------------------------ the files
    def _write_report_html(self, summary: dict[str, Any]) -> None:
        from .sinks.report_html import REPORT_NAME, write_report_html

        try:
            claim(self.out / REPORT_NAME)
            write_report_html(self.out, summary, self.parts.writer.get("thumbnails") or [])
            summary["outputs"]["report"] = REPORT_NAME
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose the run's other outputs
            summary["warnings"].append(f"report.html not written: {type(exc).__name__}: {exc}")

    def write(self, running: bool) -> dict[str, Any]:
        summary = self.summary(running=running)
        if not self.write_files:
            return summary
        try:
            if not running and self.report is not None:
                self.report.write(self.out / "latency.json", self.out / "latency.csv")
                self.report.close(remove_spool=True)
                summary["outputs"].update({"latency": ["latency.json", "latency.csv"]})
                if self.html_report:
                    self._write_report_html(summary)
            write_json_atomic(self.out / "summary.json", summary)
        except OSError as exc:
            if running or not is_disk_full(exc):
                raise
            self.parts.control.fail(exc)  # the per-frame records stay in frames.jsonl
            summary["complete"], summary["stop_reason"] = False, f"disk full: {exc}"
            try:
                write_json_atomic(self.out / "summary.json", summary)
            except OSError:
                pass
        return summary

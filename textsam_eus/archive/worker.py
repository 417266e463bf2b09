"""The model worker of an archive run: loads one engine when it starts, then annotates whole files, one at a time.

A plain class; :mod:`.runner` makes it a Ray actor (``ray.remote(ExamWorker)``), so the frames of a file stay in
the worker's process: only paths and small result dicts travel. What is done to each file is exactly what
``stream --source FILE --out FOLDER`` does (the command layer passes the same settings object to every worker,
a :class:`~textsam_eus.runs.settings.RunSettings`: :class:`FileSettings`), plus an
:class:`~textsam_eus.archive.stats.ExamStatsSink` that writes nothing.

Each file is annotated from scratch into its folder (``overwrite``: only the outputs of an earlier run there are
removed), unless an earlier run finished it and the input is unchanged (same SHA-256, ``summary.json`` complete):
then it is skipped. ``progress`` and ``stop`` run while a file is being annotated (Ray's concurrency group
``control``): ``stop`` asks the pipeline to finalise what it wrote and say ``complete: false``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Protocol

from ..core.errors import UserError
from ..core.hashing import file_sha256
from ..stream.pipeline import StreamPipeline
from .stats import ExamStatsSink

__all__ = ["ExamWorker", "FileSettings", "summary_is_complete", "rss_mb"]


class FileSettings(Protocol):
    """What the command gives every worker (picklable; :class:`~textsam_eus.runs.settings.RunSettings`): how to
    open the engine, open a file and configure the pipeline for it, from the command's options."""

    def open_engine(self, threads: int | None = None, *, quiet: bool = False) -> Any:
        ...

    def model_identity(self, engine) -> dict:
        ...

    def for_job(self, source: str, out: str | os.PathLike) -> "FileSettings":  # the settings of one file's run
        ...

    def open_source(self, spec: str | None = None):  # a FrameSource
        ...

    def to_pipeline_config(self, source, workers: int | None = None, **extra: Any):  # a PipelineConfig
        ...




def rss_mb() -> float | None:
    """This process's resident memory now (Linux ``/proc/self/statm``), in MiB; None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def summary_is_complete(folder: str | os.PathLike) -> bool:
    """``folder/summary.json`` says complete and finalised, and the outputs it names are there."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (summary.get("complete") and summary.get("finalised")):
        return False
    for value in (summary.get("outputs") or {}).values():
        for name in (value if isinstance(value, list) else [value]):
            if isinstance(name, str) and name and not (folder / name).exists():
                return False
    return True


def _read_summary(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class ExamWorker:
    """One engine, whole files. ``threads``: CPU threads of its engine; ``frame_workers``: frames of a file segmented
    in parallel (as ``stream --workers``)."""

    def __init__(self, settings: FileSettings, threads: int | None = None, frame_workers: int = 1) -> None:
        self.settings = settings
        self.frame_workers = int(frame_workers)
        self.pid, self.host = os.getpid(), socket.gethostname()
        self.engine, self.model, self.error = None, None, None
        self._pipeline: StreamPipeline | None = None
        self._stop: str | None = None
        self._frames, self._n_frames, self._source = 0, None, None
        t = time.perf_counter()
        try:
            if threads:
                import torch

                torch.set_num_threads(threads)
            self.engine = settings.open_engine(threads, quiet=True)
            self.model = settings.model_identity(self.engine)
        except UserError as exc:  # a bad checkpoint/bundle/device: reported by ready(), the run stops
            self.error = str(exc)
        self.load_s = time.perf_counter() - t

    # ------------------------------------------------------------------ control (while a file runs)
    def ready(self) -> dict[str, Any]:
        """Who this worker is and what it loaded (or the error that stopped it loading)."""
        return {"pid": self.pid, "host": self.host, "error": self.error, "model": self.model,
                "engine": self.engine.info() if self.engine is not None else None,
                "load_s": round(self.load_s, 3), "rss_mb": rss_mb()}

    def progress(self) -> dict[str, Any]:
        return {"pid": self.pid, "source": self._source, "frames": self._frames, "n_frames": self._n_frames,
                "rss_mb": rss_mb()}

    def stop(self, reason: str) -> bool:
        """Stop the file being annotated (its outputs are finalised, marked incomplete) and start no other."""
        self._stop = reason
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.request_stop(reason)
        return pipeline is not None

    # ------------------------------------------------------------------ work
    def process(self, job: dict[str, Any]) -> dict[str, Any]:
        """Annotate ``job["source"]`` into ``job["out"]`` (or skip it, see the module's doc); the result columns of
        the archive table."""
        t0 = time.perf_counter()
        res: dict[str, Any] = {"worker": f"{self.pid}@{self.host}", "pid": self.pid, "notes": []}
        self._source, self._frames, self._n_frames = job["source"], 0, None
        try:
            result = self._process(job, res)
        finally:
            self._source = None
        result.update(wall_s=round(time.perf_counter() - t0, 3), worker_rss_mb=rss_mb())
        return result

    def _process(self, job: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
        path, out = job["source"], Path(job["out"])
        try:
            res["input_sha256"] = digest = file_sha256(path)
        except OSError as exc:
            return {**res, "status": "failed", "reason": f"cannot read the file: {exc.strerror or exc}; check that "
                                                          "it exists and is readable"}
        expect = job.get("expect_sha256")
        if expect:
            if digest == expect and summary_is_complete(out):
                return {**res, "status": "skipped",
                        "reason": "already annotated by an earlier run (input unchanged, summary.json complete)"}
            res["notes"].append("the input changed since an earlier run annotated it: annotated again"
                                if digest != expect else "the earlier run's outputs were incomplete: annotated again")
        if self._stop:
            return {**res, "status": "incomplete", "reason": f"not started: {self._stop}"}
        job = self.settings.for_job(path, out)  # its settings, recorded in its summary.json
        try:
            source = self.settings.open_source(path)
        except (UserError, ValueError, OSError) as exc:
            return {**res, "status": "failed", "reason": str(exc)}
        with source:
            self._n_frames = source.n_frames
            try:
                cfg = job.to_pipeline_config(source, self.frame_workers, model=self.model, handle_signals=False)
                stats = ExamStatsSink()
                pipeline = StreamPipeline(self.engine, source, out, cfg, progress=self._tick, extra_sinks=[stats])
            except (UserError, ValueError) as exc:  # e.g. an --roi that does not fit this file's frames
                return {**res, "status": "failed", "reason": str(exc)}
            self._pipeline = pipeline
            if self._stop:  # asked to stop while the pipeline was being set up
                pipeline.request_stop(self._stop)
            error = None
            try:
                summary = pipeline.run()
            except UserError as exc:  # a full disk, ...: the outputs so far are finalised, summary.json says so
                error, summary = str(exc), _read_summary(out)
            finally:
                self._pipeline = None
            fps, announced = source.fps, source.n_frames
        return self._result(res, summary, stats, fps, announced, error)

    def _tick(self, n: int) -> None:
        self._frames += n

    def _result(self, res, summary, stats: ExamStatsSink, fps, announced, error) -> dict[str, Any]:
        done = bool(summary.get("complete")) and error is None
        res.update(stats.result())
        presence = summary.get("presence") or {}
        if presence.get("shown_fraction") is not None:  # the gate's own count, as report.html shows it
            res["presence_shown"] = round(float(presence["shown_fraction"]), 4)
        res.update(status="done" if done else "incomplete",
                   reason=None if done else (error or summary.get("stop_reason")),
                   frames=summary.get("frames_out"), fps=round(fps, 3) if fps else None,
                   speed_fps=round(float(summary.get("fps") or 0.0), 2),
                   report=(summary.get("outputs") or {}).get("report"),
                   model_sha256=(self.model or {}).get("sha256"))
        src, frames = summary.get("source_stats") or {}, int(summary.get("frames_out") or 0)
        damage = []
        if src.get("decode_errors"):
            damage.append(f"{src['decode_errors']} packet(s) could not be decoded")
        if src.get("corrupt_packets") or src.get("corrupt_frames"):
            damage.append(f"{src.get('corrupt_packets', 0)} packet(s) and {src.get('corrupt_frames', 0)} frame(s) "
                          "flagged corrupt (FFmpeg concealed the damage)")
        if done and announced and frames < announced - 1 and not summary.get("stop_reason", "").startswith("max"):
            damage.append(f"the file announces about {announced} frames, {frames} could be read")
        if damage:  # a finished examination, but not of the whole recording: the table says why
            res["reason"] = (f"damaged or truncated recording: {'; '.join(damage)}; the {frames} decodable frames "
                             "were annotated")
        res["notes"] += [w for w in summary.get("warnings") or []]
        return res

"""Runs the plans of the matrix: builds each model once, makes each engine, measures its rows, records skips.

Everything goes into ``results.json`` as it happens (rows, setup times, notes, meta), so a run that is stopped
still leaves its numbers behind.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from textsam_eus.core.files import write_text_atomic

from .machine import proc_status, reset_peak_rss, ru_maxrss_mb
from .models import Bundles, VariantUnavailable, build_model, timed_call
from .modes import run_model_mode, run_stream_mode
from .plans import Plan, base_id, row_id
from .report import num
from .timing import MeasuredEngine


class Bench:
    """One benchmark run writing into ``out``: ``rows``, ``setup`` (model build, export, engine creation times),
    ``notes`` and ``meta``; ``time_budget`` seconds after which no configuration is started."""

    def __init__(self, out: Path, *, threads: int, seed: int = 0, checkpoint: str = "demo",
                 time_budget: float | None = None) -> None:
        self.out, self.threads, self.seed, self.checkpoint = out, threads, seed, checkpoint
        self.time_budget = time_budget
        self.rows: list[dict[str, Any]] = []
        self.setup: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.meta: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.tmp = Path(tempfile.mkdtemp(prefix="textsam-bench-"))
        self.bundles = Bundles(self.tmp, self.timed_setup)
        self._model: tuple[tuple[str, int], Any] | None = None  # (preset@size, model) of the plans in progress

    # ---------------------------------------------------------------- bookkeeping
    def over_budget(self) -> bool:
        return bool(self.time_budget) and time.perf_counter() - self.t0 > self.time_budget

    def budget_reason(self) -> str:
        return f"time budget of {self.time_budget:.0f} s used up"

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            print("NOTE: " + text, flush=True)

    def skip(self, config: dict[str, Any], reason: str, kind: str = "unavailable",
             failure: str | None = None) -> None:
        """A row that was not measured; ``failure``: the traceback of a row that failed while measuring."""
        row = {"id": row_id(config), "status": "skipped", "skip_kind": kind, "reason": reason, "config": config}
        if failure is not None:
            row["traceback"] = failure
        self.rows.append(row)
        print(f"  {'FAILED' if failure is not None else 'skipped'} {row['id']}: {reason}", flush=True)
        self.save_json()

    def timed_setup(self, what: str, fn: Callable):
        result, s = timed_call(fn)
        self.setup.append({"what": what, "seconds": round(s, 3)})
        print(f"  setup: {what} took {s:.1f} s", flush=True)
        return result

    def save_json(self) -> None:
        data = {"meta": {**self.meta, "wall_s": round(time.perf_counter() - self.t0, 2)}, "notes": self.notes,
                "setup": self.setup, "rows": self.rows}
        write_text_atomic(self.out / "results.json", json.dumps(data, indent=1, default=str))

    # ---------------------------------------------------------------- the run
    def run(self, plans: list[Plan], frames: list[np.ndarray], clip: dict[str, Any]) -> None:
        for plan in plans:
            self.run_plan(plan, frames, clip)
        self._release_model(None)
        self.add_ratios()

    def run_plan(self, plan: Plan, frames: list[np.ndarray], clip: dict[str, Any]) -> None:
        """The rows of one engine configuration, or its skipped row."""
        self._release_model(plan.key)
        if plan.skip_kind:
            return self.skip(plan.config(clip["desc"], self.threads), plan.reason, kind=plan.skip_kind)
        if self.over_budget():
            return self.skip(plan.config(clip["desc"], self.threads), self.budget_reason(), kind="budget")
        model = self._model_for(plan)
        graphs = " cuda-graphs" if plan.cuda_graphs else ""
        extra = (f" attention={plan.attention}" if plan.attention else "") + (" torch.compile" if plan.compile else "")
        try:
            engine = self.timed_setup(
                f"engine {plan.engine} {plan.device} {plan.precision}{graphs}{extra} {plan.preset}@{plan.image_size}",
                lambda: self.bundles.engine(plan.engine, plan.key, model, plan.device, plan.precision,
                                            plan.cuda_graphs, self.threads, attention=plan.attention,
                                            compile_encoder=plan.compile))
        except VariantUnavailable as exc:  # torch.compile missing, int8 refused here: skipped, with why
            return self.skip(plan.config(clip["desc"], self.threads), str(exc), kind="unavailable")
        except Exception as exc:  # noqa: BLE001 - one configuration, not the run
            return self.skip(plan.config(clip["desc"], self.threads),
                             f"error creating the engine: {type(exc).__name__}: {exc}", kind="error")
        weights = self.meta["weights"][f"{plan.preset}@{plan.image_size}"]
        try:
            for config in plan.row_configs(clip["desc"], self.threads, weights):
                self.run_row(config, engine, frames, clip)
        finally:
            engine.close()
            del engine
            self._free_memory(plan.device)

    def _model_for(self, plan: Plan):
        if self._model is None:
            name = f"{plan.preset}@{plan.image_size}"
            model, weights, note = self.timed_setup(
                f"build model {name}", lambda: build_model(plan.preset, plan.image_size, self.checkpoint, self.seed))
            if note:
                self.note(note)
            self.meta.setdefault("weights", {})[name] = weights
            self._model = (plan.key, model)
        return self._model[1]

    def _release_model(self, key: tuple[str, int] | None) -> None:
        """Drop the model once the plans move on to another preset@size (or at the end: key None)."""
        if self._model is not None and self._model[0] != key:
            self._model = None
            gc.collect()

    @staticmethod
    def _free_memory(device: str) -> None:
        gc.collect()
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def run_row(self, config: dict[str, Any], engine, frames: list[np.ndarray], clip: dict[str, Any]) -> None:
        if self.over_budget():
            return self.skip(config, self.budget_reason(), kind="budget")
        config = _fit_stream_to_clip(config, clip)
        cuda = config["device"] == "cuda"
        print(f"- {row_id(config)} ({config['frames']} frames + {config['warmup']} warm-up)", flush=True)
        row_reset = _reset_peaks(cuda)
        measured = MeasuredEngine(engine, config["mode"], cuda)
        t = time.perf_counter()
        try:
            res = self._measure(config, measured, frames, clip)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            return self.skip(config, f"error: {type(exc).__name__}: {exc}", kind="error",
                             failure=traceback.format_exc(limit=6))
        row = {"id": row_id(config), "status": "ok", "config": config, **res, "memory": _memory(row_reset, cuda),
               "timer": "cuda_event" if cuda else "perf_counter", "wall_s": round(time.perf_counter() - t, 3),
               "engine_info": engine.info()}
        self.rows.append(row)
        lat = row["latency_ms"]
        print(f"  total p50 {num(lat['p50'])} ms, p95 {num(lat['p95'])}, encoder/call p50 "
              f"{num(row['encoder_call_ms']['p50'])} ms x {row['encoder_calls_per_frame']:.2f}, "
              f"fps {num(row['fps'])}", flush=True)
        self.save_json()

    def _measure(self, config: dict[str, Any], measured: MeasuredEngine, frames: list[np.ndarray],
                 clip: dict[str, Any]) -> dict[str, Any]:
        if config["mode"] == "stream":
            return run_stream_mode(measured, clip, config["warmup"], config["frames"], config["iterations"],
                                   self.seed, self.tmp)
        return run_model_mode(measured, frames, config["warmup"], config["frames"], config["iterations"])

    def add_ratios(self) -> None:
        """reference / ours for every reference row with a matching model row (same config, mode 'model'); for
        every variant row (attention, torch.compile, int8) variant / baseline of the same configuration."""
        by_id = {r["id"]: r for r in self.rows if r["status"] == "ok"}
        for r in self.rows:
            bid = base_id(r["config"])
            if r["status"] != "ok" or bid is None:
                continue
            b = by_id.get(bid)
            r["base_id"] = bid
            r["variant_over_base"] = None if b is None else {
                "total_p50": _ratio(r["latency_ms"]["p50"], b["latency_ms"]["p50"]),
                "total_mean": _ratio(r["latency_ms"]["mean"], b["latency_ms"]["mean"]),
                "encoder_p50": _ratio(r["encoder_call_ms"]["p50"], b["encoder_call_ms"]["p50"])}
        ours = {row_id({**r["config"], "mode": "model"}): r for r in self.rows
                if r["status"] == "ok" and r["config"]["mode"] == "model"}
        for r in self.rows:
            if r["status"] != "ok" or r["config"]["mode"] != "reference":
                continue
            m = ours.get(row_id({**r["config"], "mode": "model"}))
            if m is None:
                r["reference_over_ours"] = None
                continue
            r["reference_over_ours"] = {stat: _ratio(r["latency_ms"][stat], m["latency_ms"][stat])
                                        for stat in ("p50", "mean")}
            r["ours_id"] = m["id"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _fit_stream_to_clip(config: dict[str, Any], clip: dict[str, Any]) -> dict[str, Any]:
    """A stream row cannot measure more frames than the clip has: fewer are measured, with a note."""
    if config["mode"] != "stream" or clip["kind"] != "video":
        return config
    avail = int(clip.get("frames_available") or 0)
    if avail and config["warmup"] + config["frames"] > avail:
        n = max(1, avail - config["warmup"])
        return {**config, "frames": n, "note": f"the clip has {avail} frames: {n} measured"}
    return config


def _reset_peaks(cuda: bool) -> bool:
    """Reset the peak RSS (and the CUDA peak) before a row; False when the RSS peak is process-wide."""
    reset = reset_peak_rss()
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return reset


def _memory(row_reset: bool, cuda: bool) -> dict[str, Any]:
    status = proc_status()
    mem = {"rss_peak_mb": status.get("VmHWM"), "rss_peak_scope": "row" if row_reset else "process",
           "rss_now_mb": status.get("VmRSS"), "ru_maxrss_mb": ru_maxrss_mb()}
    if cuda:
        import torch

        mem["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        mem["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2 ** 20
    return mem

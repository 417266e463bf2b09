"""Timing: percentiles, a per-call timer for the encoder/decoder, and the measured segmenter of one row.

:class:`MeasuredEngine` runs the engine's own :class:`~textsam_eus.model.refine.Segmenter` core (a copy, so the
engine itself is never changed): the image encoder goes in through ``Segmenter.segment(..., encode=...)`` and the
decoder through the copy's backend hook, both timed per call. In the ``reference`` mode every refinement pass first
recomputes the image embedding, as the paper's reference implementation does.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable

import numpy as np

MODES = ("model", "stream", "reference")


def stats(values) -> dict[str, Any]:
    """count, p50, p95, p99, mean, min, max, std of the finite values (ms); None fields when empty."""
    arr = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if arr.size == 0:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "mean": None, "min": None, "max": None,
                "std": None}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])

    def r(x) -> float:
        return round(float(x), 4)

    return {"count": int(arr.size), "p50": r(p50), "p95": r(p95), "p99": r(p99), "mean": r(arr.mean()),
            "min": r(arr.min()), "max": r(arr.max()), "std": r(arr.std())}


def round_list(values, nd: int = 3) -> list:
    return [None if v is None else round(float(v), nd) for v in values]


class CallTimer:
    """Wraps an encode/decode callable: counts calls and times each (CUDA events on GPU, else perf_counter)."""

    def __init__(self, fn: Callable, cuda: bool) -> None:
        self.fn, self.cuda = fn, cuda
        self.calls = 0
        self._events: list = []
        self._ms: list[float] = []

    def __call__(self, *args):
        self.calls += 1
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.fn(*args)
            end.record()
            self._events.append((start, end))
            return out
        t = time.perf_counter()
        out = self.fn(*args)
        self._ms.append((time.perf_counter() - t) * 1e3)
        return out

    def harvest(self) -> tuple[int, list[float]]:
        """(calls, per-call ms) since the last harvest."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self._ms = [s.elapsed_time(e) for s, e in self._events]
            self._events = []
        calls, ms = self.calls, self._ms
        self.calls, self._ms = 0, []
        return calls, ms


class MeasuredEngine:
    """What one benchmark row segments with: ``engine``'s segmenter with timed encoder/decoder calls.

    It has what the StreamPipeline uses of an engine (``name``, ``info()``, ``segment``), so the ``stream`` mode
    runs it too. ``frames`` collects one record per ``segment`` call (wall time, stage timings, calls and their
    times).
    """

    def __init__(self, engine, mode: str, cuda: bool) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is invalid: choose one of {', '.join(MODES)}")
        self.engine, self.mode = engine, mode
        self.name = engine.name
        self.enc = CallTimer(engine.segmenter.encode, cuda)
        self.dec = CallTimer(engine.segmenter.decode, cuda)
        self._segmenter = copy.copy(engine.segmenter)  # the same core and settings; the engine keeps its own
        self._segmenter.decode = self._decode
        self._input = None  # the current frame's encoder input (the reference mode encodes it again)
        self._first_pass = False
        self.frames: list[dict[str, Any]] = []

    def _encode(self, x):
        self._input, self._first_pass = x, True
        return self.enc(x)

    def _decode(self, emb, coords, labels):
        if self.mode == "reference":
            if self._first_pass:
                self._first_pass = False  # the text-only pass uses the frame's embedding
            else:  # every refinement pass: the reference recomputes the encoder on the same input
                emb = self.enc(self._input)
        return self.dec(emb, coords, labels)

    def info(self) -> dict[str, Any]:
        return self.engine.info()

    def segment(self, frame, **kwargs):
        t = time.perf_counter()
        res = self._segmenter.segment(frame, encode=self._encode, **kwargs)
        wall = (time.perf_counter() - t) * 1e3
        n_enc, enc_ms = self.enc.harvest()
        n_dec, dec_ms = self.dec.harvest()
        self.frames.append({"wall": wall, "timings": dict(res.timings), "passes": int(res.passes),
                            "enc_calls": n_enc, "enc_ms": enc_ms, "dec_calls": n_dec, "dec_ms": dec_ms,
                            "empty": res.box is None})
        return res


def stage_table(per_frame: list[dict[str, float]]) -> dict[str, dict]:
    keys: list[str] = []
    for t in per_frame:
        keys += [k for k in t if k not in keys]
    return {k: stats([t.get(k) for t in per_frame if t.get(k) is not None]) for k in keys}


def _per_frame(frames: list[dict[str, Any]], key: str) -> float | None:
    n = len(frames)
    return (sum(f[key] for f in frames) / n) if n else None


def summarise(frames: list[dict[str, Any]], stage_frames: list[dict[str, float]], latency: list[float],
              fps: float | None) -> dict[str, Any]:
    """Row numbers from the measured (post-warm-up) frames."""
    enc_frame = [sum(f["enc_ms"]) for f in frames]
    dec_frame = [sum(f["dec_ms"]) for f in frames]
    stages = stage_table(stage_frames)
    bars = {"encoder": stats(enc_frame)["p50"], "decoder": stats(dec_frame)["p50"]}
    for key in ("video_decode", "queue_wait", "preprocess", "postprocess", "overlay", "sink_write"):
        bars[key] = (stages.get(key) or {}).get("p50")
    return {
        "frames_measured": len(frames),
        "encoder_calls_per_frame": _per_frame(frames, "enc_calls"),
        "decoder_calls_per_frame": _per_frame(frames, "dec_calls"),
        "passes_per_frame": _per_frame(frames, "passes"),
        "frames_refinement_stopped_early": sum(1 for f in frames if f["empty"]),
        "encoder_call_ms": stats([m for f in frames for m in f["enc_ms"]]),
        "decoder_call_ms": stats([m for f in frames for m in f["dec_ms"]]),
        "encoder_frame_ms": stats(enc_frame),
        "decoder_frame_ms": stats(dec_frame),
        "stages_ms": stages,
        "latency_ms": stats(latency),
        "fps": fps,
        "bars_p50_ms": bars,
        "per_frame_ms": {"latency": round_list(latency), "encoder": round_list(enc_frame),
                         "decoder": round_list(dec_frame)},
    }

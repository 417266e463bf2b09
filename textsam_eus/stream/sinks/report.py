"""Per-frame latency records -> percentiles, JSON and CSV, in bounded memory (:class:`LatencyReport`, fed by
:class:`ReportSink`), and the atomic JSON / text writes of the run's files (pure numpy; no torch, no model/engine
imports)."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..manifest import claim
from ..record import FrameRecord
from .base import Sink

# --------------------------------------------------------------------------- latency

def json_safe(v):
    """``v`` with numpy scalars made plain and non-finite floats made ``None`` (valid JSON, recursively)."""
    if isinstance(v, Mapping):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary name beside ``path``, then rename it into place: readers see the old
    file or the whole new one, never a part."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    claim(path)
    try:
        part.write_text(text, encoding="utf-8")
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON (non-finite numbers as null) atomically (:func:`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(json_safe(data), indent=2, default=str, allow_nan=False))


class _Series:
    """Count, mean and max exactly; percentiles from the values themselves up to ``cap`` values, then from a
    uniform reservoir sample of ``cap`` values (algorithm R), so memory stays bounded on runs of any length."""

    def __init__(self, cap: int, seed: int) -> None:
        self.cap = cap
        self.values = np.empty(0, dtype=np.float64)
        self._n_kept = 0
        self.count = 0
        self.total = 0.0
        self.max = -math.inf
        self._rng = np.random.default_rng(seed)

    def add(self, v: float) -> None:
        if v is None or not math.isfinite(v):
            return
        self.count += 1
        self.total += v
        self.max = max(self.max, v)
        if self._n_kept < self.cap:
            if self._n_kept == self.values.size:
                grown = np.empty(min(self.cap, max(256, 2 * self.values.size)), dtype=np.float64)
                grown[:self._n_kept] = self.values[:self._n_kept]
                self.values = grown
            self.values[self._n_kept] = v
            self._n_kept += 1
        else:
            j = int(self._rng.integers(0, self.count))
            if j < self.cap:
                self.values[j] = v

    def stats(self, percentiles) -> dict[str, Any]:
        if self.count == 0:
            return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
        p = np.percentile(self.values[:self._n_kept], percentiles)
        out = {"count": self.count, "p50": float(p[0]), "p95": float(p[1]), "p99": float(p[2]),
               "max": float(self.max), "mean": self.total / self.count}
        if self.count > self.cap:
            out["percentiles_from_sample"] = self.cap
        return out


class LatencyReport:
    """Collect per-frame timings and summarise them, in bounded memory for runs of any length.

    A record has an optional ``index``, ``dropped`` flag, ``latency_ms`` (capture-to-overlay,
    end to end), optional ``timestamp``, and stage timings in ms: either a ``stages`` dict or
    any other numeric fields (e.g. ``capture_ms=1.2, infer_ms=20.3``).  Non-numeric extras are
    kept in the per-frame output only.

    Records are spooled to ``spool`` (JSON lines; a temporary file when not given) as they arrive, so a killed
    run keeps them on disk and memory does not grow with the run; :meth:`write` turns the spool into JSON/CSV.
    Percentiles are exact up to ``sample_cap`` values per stage, then computed from a uniform sample of that
    many (count, mean and max stay exact). Thread-safe.

    ``fps`` = frames processed (not dropped) / wall time, wall time running from construction
    (or :meth:`start`) to :meth:`stop` (or the last record).
    """

    PERCENTILES = (50, 95, 99)

    def __init__(self, name: str = "", clock: Callable[[], float] = time.monotonic,
                 spool: str | os.PathLike | None = None, sample_cap: int = 100_000) -> None:
        self.name = name
        self._clock = clock
        self.sample_cap = int(sample_cap)
        self.spool_path = Path(spool) if spool is not None else None
        if self.spool_path is not None:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            claim(self.spool_path)
            self._spool = open(self.spool_path, "w+", encoding="utf-8", buffering=1)
        else:
            self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._latency = _Series(self.sample_cap, 0)
        self._stage_names: list[str] = []
        self._extra_names: list[str] = []
        self._has_timestamp = False
        self.n_records = 0
        self.n_dropped = 0
        self._t_start = clock()
        self._t_last: float | None = None
        self._t_stop: float | None = None

    def start(self) -> None:
        self._t_start = self._clock()
        self._t_stop = None

    def stop(self) -> None:
        self._t_stop = self._clock()

    def add(self, record: Mapping[str, Any] | None = None, /, **fields) -> dict[str, Any]:
        data = dict(record or {})
        data.update(fields)
        stages = dict(data.pop("stages", None) or {})
        with self._lock:
            rec: dict[str, Any] = {
                "index": data.pop("index", self.n_records),
                "dropped": bool(data.pop("dropped", False)),
                "latency_ms": data.pop("latency_ms", None),
            }
            if "timestamp" in data:
                rec["timestamp"] = data.pop("timestamp")
                self._has_timestamp = True
            extras = {}
            for k, v in data.items():
                if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
                    stages[k] = v
                elif isinstance(v, Mapping):
                    extras.update(v)
                else:
                    extras[k] = v
            clean_stages = {}
            for k, v in stages.items():
                k = str(k)
                clean_stages[k] = None if v is None else float(v)
                if k not in self._series:
                    self._stage_names.append(k)
                    self._series[k] = _Series(self.sample_cap, len(self._series) + 1)
                self._series[k].add(clean_stages[k])
            for k in extras:
                if k not in self._extra_names:
                    self._extra_names.append(k)
            if rec["latency_ms"] is not None:
                rec["latency_ms"] = float(rec["latency_ms"])
                if not rec["dropped"]:
                    self._latency.add(rec["latency_ms"])
            rec["stages"] = clean_stages
            rec.update({k: v for k, v in extras.items() if k not in rec})
            self._spool.write(json.dumps(json_safe(rec), default=str, allow_nan=False) + "\n")
            self.n_records += 1
            self.n_dropped += rec["dropped"]
            self._t_last = self._clock()
        return rec

    def records(self) -> Iterator[dict[str, Any]]:
        """The spooled records, in order (read back from disk; adding waits until the iteration ends)."""
        with self._lock:
            self._spool.flush()
            self._spool.seek(0)
            try:
                for line in self._spool:
                    yield json.loads(line)
            finally:
                self._spool.seek(0, os.SEEK_END)

    def close(self, remove_spool: bool = False) -> None:
        with self._lock:
            if not self._spool.closed:
                self._spool.close()
        if remove_spool and self.spool_path is not None:
            self.spool_path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ summary
    @property
    def stage_names(self) -> list[str]:
        return list(self._stage_names)

    def wall_time_s(self) -> float:
        end = self._t_stop if self._t_stop is not None else self._t_last
        if end is None:
            return 0.0
        return max(0.0, float(end - self._t_start))

    def summary(self, wall_time_s: float | None = None) -> dict[str, Any]:
        with self._lock:
            processed = self.n_records - self.n_dropped
            wall = self.wall_time_s() if wall_time_s is None else float(wall_time_s)
            return {
                "name": self.name,
                "frames_total": self.n_records,
                "frames_processed": processed,
                "frames_dropped": self.n_dropped,
                "wall_time_s": wall,
                "fps": (processed / wall) if wall > 0 else None,
                "latency_ms": self._latency.stats(self.PERCENTILES),
                "stages_ms": {name: self._series[name].stats(self.PERCENTILES) for name in self._stage_names},
            }

    def format_summary(self, summary: dict[str, Any] | None = None) -> str:
        s = summary or self.summary()
        fps = "n/a" if s["fps"] is None else f"{s['fps']:.1f}"
        lines = [f"frames processed {s['frames_processed']}, dropped {s['frames_dropped']}, "
                 f"wall {s['wall_time_s']:.2f} s, fps {fps}",
                 f"{'stage (ms)':<20}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}{'mean':>9}"]

        def row(name, st):
            if not st["count"]:
                return f"{name:<20}{'-':>9}{'-':>9}{'-':>9}{'-':>9}{'-':>9}"
            return (f"{name:<20}{st['p50']:>9.2f}{st['p95']:>9.2f}{st['p99']:>9.2f}"
                    f"{st['max']:>9.2f}{st['mean']:>9.2f}")

        for name, st in s["stages_ms"].items():
            lines.append(row(name, st))
        lines.append(row("end-to-end", s["latency_ms"]))
        return "\n".join(lines)

    # ------------------------------------------------------------------ output
    def _columns(self) -> list[str]:
        cols = ["index", "dropped", "latency_ms"]
        if self._has_timestamp:
            cols.append("timestamp")
        return cols + self._stage_names + [e for e in self._extra_names if e not in cols]

    def _flat_rows(self) -> Iterator[dict[str, Any]]:
        for r in self.records():
            stages = r.pop("stages", {})
            r.update(stages)
            yield r

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "frames": list(self._flat_rows())}

    def write_json(self, path: str | os.PathLike) -> Path:
        """``{"summary": ..., "frames": [...]}``, streamed from the spool and put in place atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        claim(path)
        try:
            with open(part, "w", encoding="utf-8") as f:
                f.write('{"summary": ' + json.dumps(json_safe(self.summary()), indent=2, allow_nan=False)
                        + ',\n"frames": [')
                for i, row in enumerate(self._flat_rows()):
                    f.write(("," if i else "") + "\n" + json.dumps(row, default=str, allow_nan=False))
                f.write("\n]}\n")
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return path

    def write_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cols = self._columns()
        part = path.with_name(path.name + ".part")
        claim(path)
        try:
            with open(part, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
                w.writeheader()
                for row in self._flat_rows():
                    w.writerow({k: ("" if v is None else v) for k, v in row.items()})
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return path

    def write(self, json_path: str | os.PathLike | None = None,
              csv_path: str | os.PathLike | None = None) -> dict[str, Any]:
        """Write JSON and/or CSV; returns the summary."""
        if json_path is not None:
            self.write_json(json_path)
        if csv_path is not None:
            self.write_csv(csv_path)
        return self.summary()

    def __len__(self) -> int:
        return self.n_records


class ReportSink(Sink):
    """Per-frame timings and results into the latency report (which streams them to disk)."""

    def __init__(self, report: LatencyReport) -> None:
        self.report = report

    def write(self, record: FrameRecord) -> None:
        result = record.result
        timings = dict(record.timings)
        latency = timings.pop("latency_capture_to_overlay", None)
        extra = {"iou_pred": round(float(result.iou), 4) if np.isfinite(result.iou) else None,
                 "passes": int(result.passes)}
        extra.update({k: v for k, v in record.info.items() if k != "outputs"})  # mask_area, layout, presence...
        self.report.add(index=record.index, latency_ms=latency, stages=timings, timestamp=record.timestamp,
                        result=extra)

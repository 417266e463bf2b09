"""Per-frame latency records -> percentiles, JSON and CSV (pure numpy; no torch, no model/engine imports)."""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

# --------------------------------------------------------------------------- latency

_RESERVED = ("index", "dropped", "latency_ms", "timestamp")


def _finite_or_none(v):
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


class LatencyReport:
    """Collect per-frame timings and summarise them (pure numpy).

    A record has an optional ``index``, ``dropped`` flag, ``latency_ms`` (capture-to-overlay,
    end to end), optional ``timestamp``, and stage timings in ms: either a ``stages`` dict or
    any other numeric fields (e.g. ``capture_ms=1.2, infer_ms=20.3``).  Non-numeric extras are
    kept in the per-frame output only.

    ``fps`` = frames processed (not dropped) / wall time, wall time running from construction
    (or :meth:`start`) to :meth:`stop` (or the last record).
    """

    PERCENTILES = (50, 95, 99)

    def __init__(self, name: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.records: list[dict[str, Any]] = []
        self._stage_names: list[str] = []
        self._extra_names: list[str] = []
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
        rec: dict[str, Any] = {
            "index": data.pop("index", len(self.records)),
            "dropped": bool(data.pop("dropped", False)),
            "latency_ms": data.pop("latency_ms", None),
        }
        if "timestamp" in data:
            rec["timestamp"] = data.pop("timestamp")
        extras = {}
        for k, v in data.items():
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
                stages[k] = v
            else:
                extras[k] = v
        clean_stages = {}
        for k, v in stages.items():
            clean_stages[str(k)] = None if v is None else float(v)
            if k not in self._stage_names:
                self._stage_names.append(str(k))
        for k in extras:
            if k not in self._extra_names:
                self._extra_names.append(k)
        if rec["latency_ms"] is not None:
            rec["latency_ms"] = float(rec["latency_ms"])
        rec["stages"] = clean_stages
        rec.update({k: v for k, v in extras.items() if k not in rec})
        self.records.append(rec)
        self._t_last = self._clock()
        return rec

    # ------------------------------------------------------------------ summary
    @property
    def stage_names(self) -> list[str]:
        return list(self._stage_names)

    @classmethod
    def _stats(cls, values: list[float]) -> dict[str, Any]:
        arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
        if arr.size == 0:
            return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
        p = np.percentile(arr, cls.PERCENTILES)
        return {"count": int(arr.size), "p50": float(p[0]), "p95": float(p[1]),
                "p99": float(p[2]), "max": float(arr.max()), "mean": float(arr.mean())}

    def wall_time_s(self) -> float:
        end = self._t_stop if self._t_stop is not None else self._t_last
        if end is None:
            return 0.0
        return max(0.0, float(end - self._t_start))

    def summary(self, wall_time_s: float | None = None) -> dict[str, Any]:
        processed = [r for r in self.records if not r["dropped"]]
        wall = self.wall_time_s() if wall_time_s is None else float(wall_time_s)
        stages = {name: self._stats([r["stages"].get(name) for r in self.records
                                     if r["stages"].get(name) is not None])
                  for name in self._stage_names}
        return {
            "name": self.name,
            "frames_total": len(self.records),
            "frames_processed": len(processed),
            "frames_dropped": len(self.records) - len(processed),
            "wall_time_s": wall,
            "fps": (len(processed) / wall) if wall > 0 else None,
            "latency_ms": self._stats([r["latency_ms"] for r in processed
                                       if r["latency_ms"] is not None]),
            "stages_ms": stages,
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
    def _flat_rows(self) -> tuple[list[str], list[dict[str, Any]]]:
        cols = ["index", "dropped", "latency_ms"]
        if any("timestamp" in r for r in self.records):
            cols.append("timestamp")
        cols += self._stage_names + [e for e in self._extra_names if e not in cols]
        rows = []
        for r in self.records:
            row = {c: r.get(c) for c in cols if c not in r["stages"]}
            row.update(r["stages"])
            rows.append(row)
        return cols, rows

    def to_dict(self) -> dict[str, Any]:
        _, rows = self._flat_rows()
        return {"summary": self.summary(),
                "frames": [{k: _finite_or_none(v) for k, v in row.items()} for row in rows]}

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str, allow_nan=False)
        return path

    def write_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cols, rows = self._flat_rows()
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for row in rows:
                w.writerow({k: ("" if v is None else v) for k, v in row.items()})
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
        return len(self.records)



"""``report.html`` beside ``summary.json``: one self-contained page per run, written when the run ends.

The latency over time (capture-to-overlay, with its p50/p99 and the dropped frames), the time of every stage over
time and its p50/p99, the presence score over time (when the run has one) with the threshold, and a strip of sample
overlay frames. The plots are matplotlib PNGs embedded as data URIs, so the file can be mailed or archived alone.

Memory stays flat for runs of any length: the per-frame records are read back from ``latency.csv`` row by row and
folded into at most ``MAX_POINTS`` buckets (mean and max per bucket, so a latency spike is never averaged away);
:class:`ThumbnailSink` keeps at most ``2 * n`` small JPEG thumbnails, evenly spaced over the run (every k-th frame,
k doubling whenever the strip is full).

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..record import FrameRecord
from .report import write_text_atomic
from .base import Sink

__all__ = ["ThumbnailSink", "write_report_html", "REPORT_NAME"]

REPORT_NAME = "report.html"
MAX_POINTS = 2000
SKIP_STAGES = ("engine_total", "capture_to_written")  # sums of the other stages


class _EvenSpread:
    """Up to ``2 * n`` items evenly spaced over a stream of any length: every k-th, k doubling when full."""

    def __init__(self, n: int) -> None:
        self.n, self.stride, self.seen = n, 1, 0
        self.items: list[tuple[int, Any]] = []  # (frame index, JPEG bytes)
        self.last: tuple[int, Any] | None = None  # the newest item when it is not in ``items``

    def offer(self, index: int, image: np.ndarray, encode) -> None:
        k = self.seen
        self.seen += 1
        if k % self.stride:
            self.last = (index, image)  # a reference only: encoded if it ends the run
            return
        self.last = None
        jpeg = encode(image)
        if jpeg:
            self.items.append((index, jpeg))
        if len(self.items) >= 2 * self.n:  # full: keep every other one, take every 2k-th item from now on
            if len(self.items) % 2 == 0:
                self.last = self.items[-1]  # the newest, until a newer one comes
            self.items = self.items[::2]
            self.stride *= 2

    def sample(self, n: int, encode) -> list[tuple[int, bytes]]:
        """``n`` items spread over the stream, its last item last (all of them when there are fewer)."""
        items = list(self.items)
        if self.last is not None:
            index, image = self.last
            jpeg = image if isinstance(image, bytes) else encode(image)
            if jpeg:
                items.append((index, jpeg))
        if len(items) <= n:
            return items
        picks = np.linspace(0, len(items) - 1, n).round().astype(int)
        return [items[i] for i in sorted(set(picks.tolist()))]


class ThumbnailSink(Sink):
    """Overlay thumbnails (JPEG, ``width`` px wide) for the report: up to ``2 * n`` evenly spaced over the run,
    and as many over the frames whose outline was shown (a written mask that is not empty), so the strip shows
    the tumour outline whenever the run had one, however few frames it was on."""

    def __init__(self, n: int = 6, width: int = 240) -> None:
        self.n, self.width = int(n), int(width)
        self.all = _EvenSpread(self.n)
        self.outlined = _EvenSpread(self.n)
        self.frames = 0  # frames with an overlay
        self.shown_frames = 0  # of which an outline was shown
        self._shown_index: set[int] = set()

    @property
    def thumbs(self) -> list[tuple[int, bytes]]:
        return self.all.items

    def _jpeg(self, img: np.ndarray) -> bytes | None:
        import cv2

        h, w = img.shape[:2]
        small = cv2.resize(img, (self.width, max(1, round(h * self.width / w))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
        return buf.tobytes() if ok else None

    def write(self, record: FrameRecord) -> None:
        if record.overlay is None:
            return
        self.frames += 1
        index = int(record.index)
        self.all.offer(index, record.overlay, self._jpeg)
        mask = record.mask
        if mask is not None and np.any(mask):
            self.shown_frames += 1
            self.outlined.offer(index, record.overlay, self._jpeg)

    def sample(self) -> list[tuple[int, bytes]]:
        """``n`` thumbnails in frame order: half of them (rounded up) from the frames with an outline when there
        are any, the rest spread over the run with its first and last frame (all of them when there are fewer)."""
        shown = self.outlined.sample((self.n + 1) // 2, self._jpeg) if self.shown_frames else []
        self._shown_index = {i for i, _ in shown}
        rest = [t for t in self.all.sample(self.n, self._jpeg) if t[0] not in self._shown_index]
        if shown and len(rest) > self.n - len(shown):  # keep the run's first and last frames, spread the others
            keep = np.linspace(0, len(rest) - 1, self.n - len(shown)).round().astype(int)
            rest = [rest[i] for i in sorted(set(keep.tolist()))]
        return sorted(shown + rest, key=lambda t: t[0])

    def shown(self, index: int) -> bool:
        """Whether the thumbnail of frame ``index`` (from the last :meth:`sample`) shows an outline."""
        return index in self._shown_index


class _Buckets:
    """Per-frame values folded into buckets of ``size`` rows: x (first row), mean and max per bucket."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.x: list[float] = []
        self.mean: list[float] = []
        self.max: list[float] = []
        self._acc: list[float] = []
        self._x0: float | None = None
        self._rows = 0

    def add(self, x: float, v: float | None) -> None:
        if self._rows % self.size == 0:
            self._flush()
            self._x0 = x
        self._rows += 1
        if v is not None and math.isfinite(v):
            self._acc.append(v)

    def _flush(self) -> None:
        if self._acc:
            self.x.append(self._x0)
            self.mean.append(float(np.mean(self._acc)))
            self.max.append(float(np.max(self._acc)))
        self._acc = []

    def done(self) -> "_Buckets":
        self._flush()
        return self


def _f(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _read_series(csv_path: Path, stages: list[str], rows_hint: int) -> dict[str, Any]:
    size = max(1, math.ceil(max(1, rows_hint) / MAX_POINTS))
    latency, presence = _Buckets(size), _Buckets(size)
    per_stage = {s: _Buckets(size) for s in stages}
    dropped_x: list[float] = []
    n_drop, drop_every = 0, 1
    t0 = None
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ts = _f(row.get("timestamp"))
            if ts is not None and t0 is None:
                t0 = ts
            x = (ts - t0) if ts is not None else float(row.get("index") or 0)
            if row.get("dropped") in ("True", "true", "1"):
                n_drop += 1
                if n_drop % drop_every == 0:
                    dropped_x.append(x)
                    if len(dropped_x) >= 2 * MAX_POINTS:
                        dropped_x, drop_every = dropped_x[::2], drop_every * 2
                continue
            latency.add(x, _f(row.get("latency_ms")))
            presence.add(x, _f(row.get("presence")))
            for s, b in per_stage.items():
                b.add(x, _f(row.get(s)))
    return {"latency": latency.done(), "presence": presence.done(), "stages": {k: v.done() for k, v in
            per_stage.items()}, "dropped_x": dropped_x, "x_is_time": t0 is not None}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _legend_outside(ax, **kwargs) -> None:
    """The legend to the right of the plot, so it never covers a curve (the PNG is cropped to fit it)."""
    if ax.get_legend_handles_labels()[0]:  # no labelled artist (nothing measured): no legend, no warning
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def _plots(series: dict[str, Any], summary: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    out = []
    xlabel = "time since the first frame (s)" if series["x_is_time"] else "frame"
    lat, stats = series["latency"], summary.get("latency_ms") or {}
    fig = Figure(figsize=(10, 3.2))
    ax = fig.add_subplot()
    if lat.x:
        ax.plot(lat.x, lat.mean, lw=1, color="#1f77b4", label="capture to overlay (bucket mean)")
        if lat.size > 1:
            ax.plot(lat.x, lat.max, lw=0.6, color="#d62728", alpha=0.6, label=f"max per {lat.size} frames")
    for key, style in (("p50", "--"), ("p99", ":")):
        if stats.get(key) is not None:
            ax.axhline(stats[key], ls=style, color="k", lw=0.8, label=f"{key} {stats[key]:.1f} ms")
    if series["dropped_x"]:
        ax.plot(series["dropped_x"], [0] * len(series["dropped_x"]), "|", color="#ff7f0e", ms=8,
                label=f"dropped ({summary.get('frames_dropped', len(series['dropped_x']))})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ms")
    ax.set_title("Latency over time")
    _legend_outside(ax, fontsize=8)
    out.append(("Latency over time", _png(fig)))

    stages = {k: v for k, v in series["stages"].items() if v.x}
    if stages:
        fig = Figure(figsize=(10, 3.6))
        ax = fig.add_subplot()
        colours = matplotlib.colormaps["tab20"].colors
        for i, (name, b) in enumerate(stages.items()):
            ax.plot(b.x, b.mean, lw=0.9, label=name, color=colours[i % len(colours)])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms")
        ax.set_title("Stages over time (bucket means)")
        _legend_outside(ax, fontsize=7, ncol=1 + len(stages) // 12)
        out.append(("Stages over time", _png(fig)))
        st = summary.get("stages_ms") or {}
        names = [n for n in stages if (st.get(n) or {}).get("count")]
        if names:
            fig = Figure(figsize=(10, 0.35 * len(names) + 1.2))
            ax = fig.add_subplot()
            y = np.arange(len(names))
            ax.barh(y - 0.2, [st[n]["p50"] for n in names], 0.4, label="p50")
            ax.barh(y + 0.2, [st[n]["p99"] for n in names], 0.4, label="p99")
            ax.set_yticks(y, names, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("ms")
            ax.set_title("Per-stage p50 / p99")
            _legend_outside(ax, fontsize=8)
            out.append(("Per-stage p50 / p99", _png(fig)))

    pres = series["presence"]
    if pres.x:
        fig = Figure(figsize=(10, 2.6))
        ax = fig.add_subplot()
        ax.plot(pres.x, pres.mean, lw=1, color="#2ca02c", label="presence score")
        threshold = (summary.get("presence") or {}).get("threshold")
        if threshold is not None:
            ax.axhline(threshold, ls="--", color="k", lw=0.8, label=f"threshold {threshold:.3f}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_title("Tumour presence score over time")
        _legend_outside(ax, fontsize=8)
        out.append(("Presence score over time", _png(fig)))
    return out


def _table(summary: dict[str, Any]) -> str:
    lat = summary.get("latency_ms") or {}
    eng = summary.get("engine") or {}

    def ms(v):
        return "-" if v is None else f"{v:.1f} ms"

    rows = [("source", summary.get("source", "")), ("engine", f"{eng.get('engine', '?')} on {eng.get('device', '?')}"),
            ("frames", f"{summary.get('frames_out', 0)} written of {summary.get('frames_in', 0)} read, "
                       f"{summary.get('frames_dropped', 0)} dropped"),
            ("throughput", f"{summary.get('fps', 0.0):.1f} fps"),
            ("latency", f"p50 {ms(lat.get('p50'))}, p95 {ms(lat.get('p95'))}, p99 {ms(lat.get('p99'))}, "
                        f"max {ms(lat.get('max'))}"),
            ("complete", f"{'yes' if summary.get('complete') else 'NO'} ({summary.get('stop_reason', '')})")]
    rows += [("warning", w) for w in summary.get("warnings") or []]
    return "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)


def write_report_html(out_dir: str | os.PathLike, summary: dict[str, Any],
                      thumbnails: list[tuple[int, bytes]] | ThumbnailSink | None = None,
                      csv_name: str = "latency.csv") -> Path:
    """Write ``report.html`` in ``out_dir`` from ``summary`` and ``out_dir/latency.csv`` (atomically).

    ``thumbnails``: the run's :class:`ThumbnailSink` (its sample, captions saying which frames show an outline,
    and how many frames did), or plain (frame index, JPEG) pairs."""
    out = Path(out_dir)
    stages = [s for s in (summary.get("stages_ms") or {}) if s not in SKIP_STAGES]
    rows = int(summary.get("frames_out") or 0) + int(summary.get("frames_dropped") or 0)
    csv_path = out / csv_name
    plots = _plots(_read_series(csv_path, stages, rows), summary) if csv_path.is_file() else []
    figs = "\n".join(f'<figure><img alt="{html.escape(t)}" src="{uri}"><figcaption>{html.escape(t)}</figcaption>'
                     f"</figure>" for t, uri in plots)
    sink = thumbnails if isinstance(thumbnails, ThumbnailSink) else None
    pairs = sink.sample() if sink is not None else list(thumbnails or [])
    note = ""
    if sink is not None and sink.frames:
        note = (f"<p>An outline was shown on {sink.shown_frames} of {sink.frames} frames; the frames marked "
                "<b>outline shown</b> are among them.</p>" if sink.shown_frames else
                f"<p>No outline was shown on any of the {sink.frames} frames.</p>")

    def caption(i: int) -> str:
        return f"frame {i} &middot; <b>outline shown</b>" if sink is not None and sink.shown(i) else f"frame {i}"

    strip = "\n".join(f'<figure class="thumb"><img alt="frame {i}" src="data:image/jpeg;base64,'
                      f'{base64.b64encode(b).decode("ascii")}"><figcaption>{caption(i)}</figcaption></figure>'
                      for i, b in pairs)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TextSAM-EUS run report</title>
<style>body {{ font: 14px system-ui, sans-serif; margin: 20px; color: #222; }} th {{ text-align: left;
padding-right: 16px; vertical-align: top; }} figure {{ margin: 12px 0; }} img {{ max-width: 100%; }}
.strip {{ display: flex; gap: 8px; flex-wrap: wrap; }} .thumb {{ margin: 0; }} .thumb img {{ width: 240px; }}
figcaption {{ color: #666; font-size: 12px; }}</style></head><body>
<h1>TextSAM-EUS run report</h1>
<table>{_table(summary)}</table>
<h2>Latency</h2>
{figs or "<p>No per-frame records (latency.csv is missing).</p>"}
<h2>Sample overlay frames</h2>
{note}
<div class="strip">{strip or "<p>No frames were written.</p>"}</div>
</body></html>
"""
    return write_text_atomic(out / REPORT_NAME, page)

"""The soak's results (``stream_soak.py``): results.json as it goes, and the tables of results.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _n(v, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}"


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    m = meta["machine"]
    eng = meta["engine"]
    # runs with recorded settings wrote what `stream` writes by default: report.html too
    outputs = "overlay.mp4 + PNG masks" + (" + report.html (stream's defaults)" if meta.get("settings") else "")
    lines = [f"# Stream soak ({meta['started']})", "",
             f"- command: `{meta['command']}`",
             f"- machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['memory_gb']} GB; load average at "
             f"start {', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start') or [])}, at end "
             f"{', '.join(f'{x:.2f}' for x in meta.get('loadavg_at_end') or [])}",
             f"- engine: {eng['info'].get('engine')} on {eng['info'].get('device')}, {args_str(meta['args'])}; "
             f"threads: torch {eng['threads']['torch_intra_op']}, engine {eng['threads']['engine']}",
             f"- recording: {meta['recording']['frames']} frames = {meta['recording']['loops']} x "
             f"{Path(meta['recording']['source_clip']).name} remuxed ({meta['recording']['codec']}, "
             f"{meta['recording']['size'][0]}x{meta['recording']['size'][1]}, {_n(meta['recording']['fps'], 2)} fps),"
             f" ROI {meta['roi']}; outputs: {outputs}",
             f"- commit: {(m.get('git') or {}).get('commit') or 'unknown'}", ""]
    for note in data.get("notes") or []:
        lines.append(f"> {note}")
    if data.get("notes"):
        lines.append("")
    rows = data["rows"]
    lat = [r for r in rows if r["measurement"] == "realtime_latency"]
    if lat:
        lines += ["## Realtime latency (capture to overlay, ms)", "",
                  "| speed | frames in / out / dropped | late | fps | p50 | p95 | p99 | max | model p50 | target (2 "
                  "periods + model) | result |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in lat:
            lines.append(f"| x{r['speed']:g} | {r['frames_in']} / {r['frames_out']} / {r['frames_dropped']} | "
                         f"{r['late_frames'] if r['late_frames'] is not None else '-'} | "
                         f"{_n(r['fps'])} | {_n(r['p50_ms'])} | {_n(r['p95_ms'])} | {_n(r['p99_ms'])} | "
                         f"{_n(r['max_ms'])} | {_n(r['model_p50_ms'])} | <= {_n(r['target_ms'])} | "
                         f"**{r['result']}** |")
        lines += ["", "late: frames the replay released after their due time (its decoding thread fell behind).", ""]
    soak = [r for r in rows if r["measurement"] == "soak"]
    if soak:
        lines += ["## Soak (realtime replay)", "",
                  "| speed | frames in / out / dropped | RSS baseline (after n frames) | RSS end | growth | max RSS "
                  "(sampled / VmHWM) | slope MB/1000 frames | target | result |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in soak:
            lines.append(f"| x{r['speed']:g} | {r['frames_in']} / {r['frames_out']} / {r['frames_dropped']} | "
                         f"{_n(r['rss_baseline_mb'])} MB ({r['rss_baseline_after_frames']}) | {_n(r['rss_end_mb'])} MB"
                         f" | {_n(r['rss_growth_mb'])} MB | {_n(r['rss_max_sampled_mb'])} / "
                         f"{_n(r['rss_peak_vmhwm_mb'])} MB | {_n(r['rss_slope_mb_per_1000_frames'], 2)} | "
                         f"growth < {r['rss_limit_mb']:g} MB, drops > 0 | **{r['result']}** |")
        lines.append("")
    thr = [r for r in rows if r["measurement"] == "file_throughput"]
    if thr:
        lines += ["## File-mode throughput (every frame, all outputs on)", "",
                  "| frames | pipeline fps (frames_out / wall) | after warm-up | model-only fps | ratio | target | "
                  "result |", "|---|---|---|---|---|---|---|"]
        for r in thr:
            lines.append(f"| {r['frames_out']} | {_n(r['pipeline_fps'])} | {_n(r['pipeline_fps_after_warmup'])} | "
                         f"{_n(r['model_fps'])} | {_n(r['ratio'], 3)} | >= {r['min_ratio']:g} | "
                         f"**{r['result']}** |")
        lines.append("")
    errors = [r for r in rows if r.get("result") == "ERROR"]
    if errors:
        lines += ["## Errors", ""] + [f"- {r['measurement']}: {r['error']}" for r in errors] + [""]
    return "\n".join(lines)


def args_str(a: dict[str, Any]) -> str:
    return (f"checkpoint {a['checkpoint']}, frames {a['frames']}, latency frames {a['latency_frames']}, "
            f"throughput frames {a['throughput_frames']}")


def save(out: Path, data: dict[str, Any]) -> None:
    from textsam_eus.stream.sinks.report import write_json_atomic

    write_json_atomic(out / "results.json", data)

"""The reports of ``run.py``: ``results.md`` (tables) and ``latency.png`` (stacked per-stage bars)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

# stages of the stacked bars, in pipeline order: (label, key in the row's "bars_p50_ms", colour)
BAR_STAGES = [("video decode", "video_decode", "#1f77b4"), ("queue wait (stream)", "queue_wait", "#d9d9d9"),
              ("preprocess", "preprocess", "#ff7f0e"), ("image encoder (all calls)", "encoder", "#2ca02c"),
              ("decoder passes (all)", "decoder", "#d62728"), ("postprocess", "postprocess", "#9467bd"),
              ("overlay", "overlay", "#8c564b"), ("sink write (H.264 + PNG)", "sink_write", "#e377c2")]
STREAM_STAGES = ["video_decode", "queue_wait", "preprocess", "encode", "decode_0", "postprocess", "overlay",
                 "sink_write"]
PRESET_ORDER = ("tiny", "vit_b")


def num(v: float | None) -> str:
    """A number with 3 significant digits or so; '-' for None/NaN/inf."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    v = float(v)
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def triple(st: dict | None) -> str:
    """'p50 / p95 / p99' of a stats dict, '-' when empty."""
    if not st or not st.get("count"):
        return "-"
    return f"{num(st['p50'])} / {num(st['p95'])} / {num(st['p99'])}"


def short(c: dict[str, Any]) -> str:
    return (f"{c['preset']}@{c['image_size']} {c['engine']} {c['device']} {c['precision']}"
            f"{' graphs' if c.get('cuda_graphs') else ''}"
            f"{' ' + c['attention'] if c.get('attention') and c.get('variant_of', {}).get('attention') else ''}"
            f"{' compile' if c.get('compile') else ''} it{c['iterations']} {c['mode']}")


# ---------------------------------------------------------------------------------------------- results.md
def _header(data: dict[str, Any], ok: list[dict]) -> list[str]:
    meta, m = data["meta"], data["meta"]["machine"]
    gpus = ", ".join(g["name"] for g in m["gpus"]) or "none"
    timer = "CUDA events" if any(r.get("timer") == "cuda_event" for r in ok) else "perf_counter"
    lines = [f"# TextSAM-EUS latency benchmark ({meta['started']})", "",
             f"- command: `{meta['command']}`",
             f"- machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['physical_cores']} physical cores), "
             f"{m['memory_gb']} GB; GPU: {gpus}" + (f" ({m['nvidia_smi']})" if m.get("nvidia_smi") else ""),
             f"- load average at start: {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'] or [])}",
             f"- threads: torch intra-op {m['threads']['torch_intra_op']}, onnxruntime intra-op "
             f"{m['threads']['onnxruntime_intra_op']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
             f"- commit: {m['git'].get('commit') or 'unknown'}",
             f"- frames: {meta['clip']}; warm-up frames excluded; timer: {timer} for encoder/decoder calls",
             "- weights: " + "; ".join(f"{k}: {v}" for k, v in meta.get("weights", {}).items()), ""]
    lines += [f"> {n}" for n in data["notes"]]
    return lines + ([""] if data["notes"] else [])


def _variant_tag(c: dict[str, Any]) -> str:
    v = c.get("variant_of") or {}
    return (f" ({c['attention']})" if "attention" in v else "") + (" (compile)" if c.get("compile") else "")


def _latency_table(ok: list[dict]) -> list[str]:
    lines = ["## Latency (ms, p50 / p95 / p99)", "",
             "encoder and decoder are per call; total is per frame (model/reference: `engine.segment`; stream: "
             "decode of the frame to written outputs); fps: see the README.", "",
             "| preset | size | engine | device | prec | graphs (variant) | iters | mode | n | enc calls/frame | encoder | "
             "decoder pass | total | fps | peak RSS MB | GPU peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ok:
        c, mem = r["config"], r["memory"]
        gpu = mem.get("cuda_max_allocated_mb")
        lines.append(
            f"| {c['preset']} | {c['image_size']} | {c['engine']} | {c['device']} | {c['precision']} | "
            f"{'yes' if c.get('cuda_graphs') else 'no'}{_variant_tag(c)} | {c['iterations']} | {c['mode']} | {r['frames_measured']} | "
            f"{r['encoder_calls_per_frame']:.2f} | {triple(r['encoder_call_ms'])} | {triple(r['decoder_call_ms'])} "
            f"| {triple(r['latency_ms'])} | {num(r['fps'])} | {num(mem.get('rss_peak_mb'))} | "
            f"{num(gpu) if gpu is not None else '-'} |")
    return lines


def _reference_table(ok: list[dict]) -> list[str]:
    refs = [r for r in ok if r["config"]["mode"] == "reference"]
    if not refs:
        return []
    lines = ["", "## Refinement: reference (encoder per pass) vs ours (encoder once)", "",
             "| configuration | iters | ours total p50 | reference total p50 | reference / ours (p50) | (mean) |",
             "|---|---|---|---|---|---|"]
    by_id = {r["id"]: r for r in ok}
    for r in refs:
        ratio = r.get("reference_over_ours") or {}
        ours = by_id.get(r.get("ours_id", ""))
        c = r["config"]
        name = (f"{c['preset']}@{c['image_size']} {c['engine']} {c['device']} {c['precision']}"
                f"{' graphs' if c.get('cuda_graphs') else ''}")
        r50 = f"{ratio['p50']:.2f}x" if ratio.get("p50") else "-"
        rmean = f"{ratio['mean']:.2f}x" if ratio.get("mean") else "-"
        ours50 = num(ours["latency_ms"]["p50"]) if ours else "-"
        lines.append(f"| {name} | {c['iterations']} | {ours50} | {num(r['latency_ms']['p50'])} | {r50} | {rmean} |")
    return lines


def _variant_name(c: dict[str, Any]) -> str:
    """What a variant row changes against its baseline, e.g. 'attention sdpa (vs reference)'."""
    return ", ".join(f"{k} {'on' if c.get(k) is True else c.get(k)} (vs {'off' if v is None else v})"
                     for k, v in c["variant_of"].items())


def _variant_table(ok: list[dict]) -> list[str]:
    variants = [r for r in ok if r["config"].get("variant_of")]
    if not variants:
        return []
    lines = ["", "## Variants: encoder attention, torch.compile, int8 (ratio to the baseline row)", "",
             "variant / baseline of the same configuration (p50, < 1 = the variant is faster); baseline: the row "
             "with the variant's setting at its default (torch attention of the device, no torch.compile, fp32).", "",
             "| configuration | variant | baseline total p50 | variant total p50 | total ratio (p50) | (mean) | "
             "encoder ratio (p50) |", "|---|---|---|---|---|---|---|"]
    by_id = {r["id"]: r for r in ok}
    for r in variants:
        c, ratio = r["config"], r.get("variant_over_base") or {}
        base = by_id.get(r.get("base_id"))
        name = short({**c, "precision": c["variant_of"].get("precision", c["precision"])})
        lines.append(f"| {name} | {_variant_name(c)} | {num(base['latency_ms']['p50']) if base else '-'} | "
                     f"{num(r['latency_ms']['p50'])} | {num(ratio.get('total_p50'))} | "
                     f"{num(ratio.get('total_mean'))} | {num(ratio.get('encoder_p50'))} |")
    return lines


def _stream_table(ok: list[dict]) -> list[str]:
    streams = [r for r in ok if r["config"]["mode"] == "stream"]
    if not streams:
        return []
    lines = ["", "## Stream mode: per-stage p50 (ms)", "",
             "end-to-end: decode of a frame to its outputs written, including the wait in the frame queue "
             "(the file reader runs ahead of the model); without queue wait: the same minus that wait.", "",
             "| configuration | " + " | ".join(STREAM_STAGES) + " | decoder (all passes) | end-to-end p50 / p95 / "
             "p99 | without queue wait p50 / p95 / p99 | fps |", "|---" * (len(STREAM_STAGES) + 5) + "|"]
    for r in streams:
        st = r["stages_ms"]
        cells = [num((st.get(k) or {}).get("p50")) for k in STREAM_STAGES]
        lines.append(f"| {short(r['config'])} | " + " | ".join(cells) +
                     f" | {num(r['decoder_frame_ms']['p50'])} | {triple(r['latency_ms'])} | "
                     f"{triple(r.get('latency_without_queue_wait_ms'))} | {num(r['fps'])} |")
    return lines


def _skipped_and_setup(data: dict[str, Any]) -> list[str]:
    lines = []
    skipped = [r for r in data["rows"] if r["status"] != "ok"]
    if skipped:
        lines += ["", "## Skipped configurations", "", "| configuration | reason |", "|---|---|"]
        for r in skipped:
            reason = str(r["reason"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['id']} | {reason} |")
    if data["setup"]:
        lines += ["", "## Setup times (not in the latencies)", "", "| step | s |", "|---|---|"]
        lines += [f"| {s['what']} | {s['seconds']:.1f} |" for s in data["setup"]]
    return lines


def write_markdown(path: Path, data: dict[str, Any]) -> str:
    """``results.md`` from the ``results.json`` data; returns the text."""
    ok = [r for r in data["rows"] if r["status"] == "ok"]
    lines = (_header(data, ok) + _latency_table(ok) + _reference_table(ok) + _variant_table(ok)
             + _stream_table(ok) + _skipped_and_setup(data))
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


# ---------------------------------------------------------------------------------------------- latency.png
def _panel(ax, preset: str, sel: list[dict]) -> None:
    if not sel:
        ax.text(0.5, 0.5, "no measured configuration", ha="center", va="center")
        ax.set_axis_off()
        return
    y = np.arange(len(sel))[::-1]
    left = np.zeros(len(sel))
    for label, key, color in BAR_STAGES:
        vals = np.array([r["bars_p50_ms"].get(key) or 0.0 for r in sel])
        if not vals.any():
            continue
        ax.barh(y, vals, left=left, color=color, label=label, height=0.75)
        left += vals
    tot = [r["latency_ms"]["p50"] or 0.0 for r in sel]
    ax.plot(tot, y, "k|", markersize=12, markeredgewidth=2, label="end-to-end p50")
    for yi, t in zip(y, tot):
        ax.text(t, yi, f"  {num(t)}", va="center", fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels([short(r["config"]).split(" ", 1)[1] for r in sel], fontsize=7)
    ax.set_xlabel("ms per frame (p50 of each stage, stacked)")
    sizes = sorted({r["config"]["image_size"] for r in sel})
    ax.set_title(f"{preset} (input {', '.join(map(str, sizes))})", fontsize=10)
    ax.set_xlim(0, max(max(tot), float(left.max())) * 1.15 or 1)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def write_plot(path: Path, rows: list[dict[str, Any]]) -> None:
    """``latency.png``: one panel per preset, one stacked bar of stage p50s per measured configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    presets = [p for p in PRESET_ORDER if any(r["config"]["preset"] == p for r in ok)] or ["none"]
    heights = [max(1, sum(1 for r in ok if r["config"]["preset"] == p)) for p in presets]
    fig, axes = plt.subplots(len(presets), 1, figsize=(12.5, 1.6 * len(presets) + 0.26 * sum(heights)),
                             gridspec_kw={"height_ratios": [h + 2 for h in heights]}, squeeze=False)
    for ax, preset in zip(axes[:, 0], presets):
        _panel(ax, preset, [r for r in ok if r["config"]["preset"] == preset])
    fig.suptitle("TextSAM-EUS per-stage latency (p50); reference: encoder recomputed per refinement pass",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)

"""Running the stream pipeline from a command (``stream``, ``demo``): the engine of the run's settings
(:mod:`textsam_eus.runs`), the progress bar and the printed summary."""

from __future__ import annotations

from pathlib import Path


def load_engine(settings, threads: int | None, quiet: bool = False):
    """(engine, model identity) of a run's :class:`~textsam_eus.runs.settings.RunSettings` (``threads``: the
    planned CPU threads). Opening the engine may export ONNX into the cache (``RunSettings.open_engine``)."""
    engine = settings.open_engine(threads, quiet=quiet)
    return engine, settings.model_identity(engine)


def run_one(engine, source, out: Path, cfg, progress: bool, live_view=None) -> dict:
    """One run of the pipeline (``live_view``: an already started live-view server to show it on)."""
    from ..stream.pipeline import StreamPipeline

    bar = None
    if progress and not source.is_live:
        from tqdm import tqdm

        bar = tqdm(total=source.n_frames, desc=Path(str(getattr(source, "name", "") or "stream")).name,
                   unit="frame", leave=False)
    try:
        return StreamPipeline(engine, source, out, cfg, progress=bar.update if bar else None,
                              live_view=live_view).run()
    finally:
        if bar:
            bar.close()


# what each source counter means, for the closing lines (counters not listed are printed by name)
SOURCE_COUNTERS = {
    "late_frames": "{n} frame(s) decoded after their due time in the real-time replay (released at once)",
    "skipped_packets": "{n} packet(s) the decoder skipped",
    "decode_errors": "{n} frame(s) that could not be decoded (skipped)",
    "demux_errors": "{n} demuxing error(s) (unreadable parts of the file)",
    "corrupt_frames": "{n} corrupt frame(s)",
    "corrupt_packets": "{n} corrupt packet(s)",
    "read_failures": "{n} failed read(s) from the device",
    "reconnects": "{n} reconnection(s) to the device",
    "reconnect_attempts": "{n} reconnection attempt(s)",
    "lost": "{n} frame(s) lost by the device",
    "truncated_to_bytes": "the file ends early (readable up to byte {n})",
}


def source_sentence(stats: dict) -> str:
    """The source counters that are not zero, as one sentence ("" when there is nothing to say)."""
    parts = []
    for key, value in stats.items():
        if key in ("decoded", "kernel_timestamps") or not value or isinstance(value, (dict, list)):
            continue
        template = SOURCE_COUNTERS.get(key, key.replace("_", " ") + ": {n}")
        parts.append(template.format(n=value))
    return "; ".join(parts)


def print_summary(summary: dict, out: Path) -> None:
    lat = summary["latency_ms"] or {}
    st = summary["stages_ms"] or {}
    eng = summary["engine"]
    print(f"{out}: {summary['frames_out']} frames ({summary['frames_dropped']} dropped) at {summary['fps']:.1f} fps "
          f"with {eng['engine']} on {eng['device']}")
    if lat.get("count"):
        print(f"  capture-to-overlay latency ms: p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}"
              f"  max {lat['max']:.1f}")
    if st.get("engine_total", {}).get("count"):
        e = st["engine_total"]
        print(f"  model per frame ms: p50 {e['p50']:.1f}  p95 {e['p95']:.1f} (encoder p50 "
              f"{st['encode']['p50']:.1f}, decoder pass p50 {st['decode_0']['p50']:.1f})")
    line = source_sentence(summary.get("source_stats") or {})
    if line:
        print(f"  source: {line}")
    for w in summary.get("warnings") or []:
        print(f"  warning: {w}")
    if not summary.get("complete"):
        print(f"  incomplete: {summary.get('stop_reason')}; outputs written so far are finalised")

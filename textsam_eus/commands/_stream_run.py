"""Running the stream pipeline from a command (``stream``, ``demo``, ``annotate``): the ROI and pipeline settings
from the options, the engine, the progress bar and the printed summary."""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_roi_option(value: str | None):
    """(``--roi`` lower-cased, the fixed ROI or None): bad values fail here, before any work."""
    from ..stream.roi import ROI

    roi_arg = (value or "").strip().lower()
    return roi_arg, (None if roi_arg in ("", "none", "full", "auto") else ROI.parse(value))


def roi_for_source(roi_arg: str, roi, source):
    """The pipeline's ``roi`` for ``source``: a fixed ROI (checked against the first frame's size), "auto" (videos and
    capture by default: the model sees the B-mode sector, masks are clipped to it) or None (image folders)."""
    if roi is not None and source.size[0]:
        roi.validate(*source.size)
    if roi_arg == "auto" or (not roi_arg and not source.per_file_outputs):
        return "auto"
    return roi


def pipeline_config(args: argparse.Namespace, roi, workers: int, **extra):
    """The :class:`~textsam_eus.stream.pipeline.PipelineConfig` of the file-pipeline options
    (:func:`~textsam_eus.commands._args.add_file_pipeline_arguments`); ``extra``: the command's own settings."""
    from ..stream.pipeline import PipelineConfig
    from ._args import style_from

    return PipelineConfig(roi=roi, iterations=args.iterations, temporal=args.temporal, masks=args.masks,
                          write_video=not args.no_video, max_frames=args.max_frames, style=style_from(args),
                          workers=workers, presence=not args.no_presence, presence_threshold=args.presence_threshold,
                          show_frames=args.show_after, hide_frames=args.hide_after, deidentify=args.deidentify,
                          html_report=not args.no_report, **extra)


def load_engine(args: argparse.Namespace, threads: int | None, quiet: bool = False):
    """(engine, model identity) for the engine options (:func:`~textsam_eus.commands._args.add_engine_arguments`)."""
    from ..core.identity import model_identity
    from ._engine import make_engine
    from ._model_id import model_file

    engine = make_engine(args.engine, args.checkpoint, args.bundle, args.device, args.precision, args.cuda_graphs,
                         args.iterations, args.refine_prompts, threads=threads, resize=args.resize,
                         attention=args.attention, quiet=quiet, server=getattr(args, "server", None),
                         server_timeout=getattr(args, "server_timeout", 10.0))
    return engine, model_identity(engine, *model_file(args.checkpoint, args.bundle))


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

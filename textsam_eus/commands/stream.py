"""``textsam-eus stream``: segment a video file, a folder of videos/images, a capture device or the phantom."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from ..runs.settings import RunSettings
from ..runs.settings import default
from ._args import add_engine_arguments, add_file_pipeline_arguments, add_style_arguments, track_given
from ._stream_run import load_engine, print_summary, run_one


def add_arguments(p: argparse.ArgumentParser) -> None:
    inputs = p.add_argument_group("input", "what is read, and how")
    engine = p.add_argument_group("model and engine")
    frames = p.add_argument_group("segmentation", "what is done to each frame: the region the model sees, the "
                                  "tumour-presence decision")
    outputs = p.add_argument_group("outputs", "what is written to --out")
    style = p.add_argument_group("overlay style")
    live = p.add_argument_group("live view")
    saved = p.add_argument_group("settings file", "a run's settings from a file; the options typed here win")
    saved.add_argument("--config", default=None, metavar="FILE",
                       help="the settings of this command by name (max_frames = 100), from a TOML or YAML file, or "
                            "the summary.json of an earlier run (its \"settings\": the run repeated)")
    inputs.add_argument("--source", default=default("source"),
                        help="video file, folder of videos or images, device index or /dev/videoN (OpenCV), "
                             "v4l2:/dev/videoN (PyAV, kernel timestamps), lavfi:GRAPH, GStreamer pipeline (contains "
                             "'!'), or phantom[:N] (required, unless --config gives it)")
    inputs.add_argument("--realtime", action="store_true",
                        help="files/folders: replay at the recording's own timestamps as a live source (newest frame "
                             "wins, drops counted), as from a capture card")
    inputs.add_argument("--speed", type=float, default=default("speed"),
                        help="with --realtime: replay speed factor (default: %(default)s)")
    inputs.add_argument("--width", type=int, default=None, help="capture devices: requested width (default: the "
                        "device's)")
    inputs.add_argument("--height", type=int, default=None, help="capture devices: requested height (default: the "
                        "device's)")
    inputs.add_argument("--pixel-format", default=None,
                        help="capture devices: pixel format (v4l2: mjpeg, yuyv422, ...; OpenCV: a FOURCC such as "
                             "MJPG; default: the device's)")
    outputs.add_argument("--out", default=default("out"),
                         help="output folder (must be empty, or pass --overwrite; required, unless --config gives it)")
    outputs.add_argument("--overwrite", action="store_true",
                         help="replace the results of an earlier run in --out (only the files it listed as its own)")
    add_engine_arguments(engine)
    engine.add_argument("--workers", default=default("workers"),
                        help="files on a CPU: frames segmented in parallel, each worker with cores/N threads (auto: 2 "
                             "on a CPU with 2+ cores, 1 for live sources, --temporal or a GPU) (default: %(default)s)")
    add_file_pipeline_arguments(frames, inputs=inputs, outputs=outputs)
    outputs.add_argument("--no-progress", action="store_true", help="no progress bar on the console")
    add_style_arguments(style)
    live.add_argument("--view", "--serve", dest="serve", default=None, metavar="[HOST:]PORT",
                      help="the browser live view while the stream runs (--serve is the same; not the model server "
                           "of 'textsam-eus serve'): / (page), /video.mjpg, /stats.json; binds "
                           "127.0.0.1 unless HOST is given; the URL is printed once it answers, before the model "
                           "loads (default: off)")
    live.add_argument("--linger", type=float, default=None, metavar="SECONDS",
                      help="with --serve: after a run that ended by itself (a file's end, --max-frames), keep "
                           "serving its last frame for SECONDS (inf: until Ctrl-C); the outputs are complete before "
                           "(default: until Ctrl-C when the command runs in a terminal, else 0)")
    live.add_argument("--show", action="store_true", help="show a window (needs an OpenCV build with GUI)")
    track_given(p)


def _videos_in(folder: Path) -> list[Path]:
    from ..stream.base import VIDEO_EXTENSIONS
    from ..stream.sources.dicom import is_dicom_file

    return sorted(p for p in folder.iterdir() if p.is_file() and (
        p.suffix.lower() in VIDEO_EXTENSIONS or (p.suffix.lower() in ("", ".dcm", ".dicom") and is_dicom_file(p))))


def plan_jobs(spec: str, out: Path) -> list[tuple[str, Path]]:
    """(source, output folder) pairs: one per video of a folder of videos (same-stem videos get distinct
    folders, ``clip_mp4`` and ``clip_mkv``), else the source itself into ``out``."""
    from ..stream.sources import unique_stems

    if os.path.isdir(spec) and _videos_in(Path(spec)):
        videos = _videos_in(Path(spec))
        stems = unique_stems(videos)
        return [(str(v), out / stems[v]) for v in videos]
    return [(spec, out)]


def _input_files(spec: str) -> list[Path]:
    """The files a source spec reads (a file, the files of a folder): never removed by --overwrite."""
    p = Path(spec).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        return [c for c in p.iterdir() if c.is_file()]
    return []


def run(args: argparse.Namespace) -> int:
    from ..stream.warn import one_line_warnings

    # library warnings (model loading, a source opened before the run) as one line each; a run records its own
    with one_line_warnings(lambda message: print(f"warning: {message}", file=sys.stderr)):
        return _run(args)


def settings_of(args: argparse.Namespace) -> RunSettings:
    """The run's settings: the options, over those of ``--config FILE`` (only the options typed win)."""
    from ..runs.settings_file import merge_settings

    return merge_settings(vars(args), getattr(args, "_given", ()), args.config)


def _run(args: argparse.Namespace) -> int:
    from ..stream.outdir import check_out_dir

    settings = settings_of(args)  # every value is checked here, before any work
    missing = [f"--{name}" for name in ("source", "out") if getattr(settings, name) is None]
    if missing:
        print(f"textsam-eus stream: error: the following arguments are required: {', '.join(missing)} (or a "
              "--config FILE that gives them)", file=sys.stderr)
        return 2
    jobs = plan_jobs(settings.source, Path(settings.out))
    for spec_i, out_i in jobs:  # every output folder is checked before any work (also: not in use by a run)
        check_out_dir(out_i, overwrite=settings.overwrite, protect=_input_files(spec_i))
    # open the first source before loading the model: bad input fails before any work
    first = settings.open_source(jobs[0][0])
    live = None
    if settings.serve is not None:  # up before torch and the model load (seconds), for every run of a folder
        from ..stream.view.live_view import LiveViewSink

        try:
            live = LiveViewSink(settings.serve, keep_serving=True)
        except BaseException:
            first.close()
            raise
    try:
        rc, summary = _run_jobs(settings, jobs, first, live)
        if live is not None and summary is not None and not summary.get("interrupted_by"):
            _linger(live, settings.linger)  # only after a run that ended by itself
        return rc
    finally:
        if live is not None:
            live.shutdown()


def _run_jobs(settings: RunSettings, jobs, first, live) -> tuple[int, dict | None]:
    """(exit code, the last run's summary) of the runs of ``jobs``; ``first``: the first job's opened source."""
    import torch

    from ..stream.sources.dicom import dicom_info_of

    workers, threads = settings.plan_workers(first.is_live)
    if threads:
        torch.set_num_threads(threads)
    extra = {"serve": None} if live is not None else {}  # the live view is up already
    first_cfg = settings.for_job(*jobs[0]).to_pipeline_config(first, workers, **extra)  # checked before the model
    engine, first_cfg.model = load_engine(settings, threads)
    info = dicom_info_of(first)
    if settings.deidentify and info is not None and info.burned_in_annotation:
        print("warning: the DICOM file says its pixels carry burned-in annotation; --deidentify removes identifiers "
              "from the headers of the outputs, not from the pixels of the overlay", file=sys.stderr)
    if (not settings.no_presence and settings.presence_threshold is None
            and engine.presence.get("threshold") is None):
        print("notice: this checkpoint has no calibrated presence threshold (it was trained without lesion-free "
              "images), so every outline is shown; train with negatives to calibrate one", file=sys.stderr)
    failures = 0
    summary = None
    for i, (spec_i, out_i) in enumerate(jobs):
        try:
            source = first if i == 0 else settings.open_source(spec_i)
            with source:
                cfg = first_cfg if i == 0 else settings.for_job(spec_i, out_i).to_pipeline_config(
                    source, workers, model=first_cfg.model, **extra)
                summary = run_one(engine, source, out_i, cfg, not settings.no_progress, live_view=live)
            print_summary(summary, out_i)
            if summary.get("interrupted_by"):  # a signal asked to stop: no further video of a folder is started
                left = len(jobs) - i - 1
                if left:
                    print(f"stopped by {summary['interrupted_by']}: {left} more video(s) of {settings.source} not "
                          "run")
                if left or not summary.get("complete"):
                    return 130, summary
                # it came after every frame was written: the run is complete
        except ValueError as exc:
            if len(jobs) == 1:
                raise
            failures += 1
            print(f"{spec_i}: skipped: {exc}")
    return (1 if failures else 0), summary


def _linger(live, seconds: float | None) -> None:
    """Keep serving the ended run's last frame for ``seconds`` (None: until Ctrl-C in a terminal, else not at
    all); SIGINT or SIGTERM ends it early. Everything is written by then, so the exit code stays the run's."""
    import signal
    import threading
    import time

    if seconds is None:
        seconds = math.inf if _interactive() else 0.0
    if not seconds > 0:
        return
    done = threading.Event()
    until = "until Ctrl-C" if math.isinf(seconds) else f"for {seconds:g} s (Ctrl-C ends it)"
    print(f"live view: the run has ended and its outputs are written; still serving its last frame at {live.url} "
          f"{until}", file=sys.stderr, flush=True)
    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, lambda *_: done.set())
    end = time.monotonic() + seconds
    try:
        while not done.is_set() and time.monotonic() < end:
            done.wait(min(0.5, max(0.0, end - time.monotonic())))
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _interactive() -> bool:
    """Whether the command was started from a terminal (its standard input is one)."""
    try:
        return bool(sys.stdin is not None and sys.stdin.isatty())
    except (AttributeError, ValueError, OSError):
        return False

"""``textsam-eus stream``: segment a video file, a folder of videos/images, a capture device or the phantom."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..model.errors import OptionError
from ._args import add_engine_arguments, add_style_arguments, style_from
from ._stream_run import print_summary, run_one

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".ts", ".m4v", ".webm", ".mpg", ".mpeg", ".h264")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True,
                   help="video file, folder of videos or images, device index or /dev/videoN (OpenCV), "
                        "v4l2:/dev/videoN (PyAV, kernel timestamps), lavfi:GRAPH, GStreamer pipeline (contains '!'), "
                        "or phantom[:N]")
    p.add_argument("--out", required=True, help="output folder (must be empty, or pass --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    add_engine_arguments(p)
    p.add_argument("--roi", default=None,
                   help="auto (find and track the B-mode imaging sector: the default for videos and capture), none "
                        "(the whole frame: the default for image folders), x,y,w,h, or a preset (eus800x600: the "
                        "database's 711x457 crop)")
    p.add_argument("--temporal", action="store_true",
                   help="seed each frame with the previous confident frame's box/centroid")
    p.add_argument("--realtime", action="store_true",
                   help="files/folders: replay at the recording's own timestamps as a live source (newest frame "
                        "wins, drops counted), as from a capture card")
    p.add_argument("--speed", type=float, default=1.0, help="with --realtime: replay speed factor (default 1)")
    p.add_argument("--masks", default="png",
                   help="comma-separated: png (masks/), video (masks.mkv), nifti (masks.nii.gz), dicom-seg (dicom/: "
                        "SEG + overlay Secondary Capture per frame), coco (masks_coco.json, RLE); or none")
    p.add_argument("--deidentify", action="store_true",
                   help="DICOM outputs get new UIDs and no patient/study identifiers (other outputs never have any)")
    p.add_argument("--serve", default=None, metavar="[HOST:]PORT",
                   help="serve a live view while the stream runs: / (page), /video.mjpg, /stats.json; binds "
                        "127.0.0.1 unless HOST is given")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--no-video", action="store_true", help="do not write the overlay (overlay.mp4 / overlays/)")
    p.add_argument("--show", action="store_true", help="show a window (needs an OpenCV build with GUI)")
    p.add_argument("--width", type=int, default=None, help="capture devices: requested width")
    p.add_argument("--height", type=int, default=None, help="capture devices: requested height")
    p.add_argument("--fps", type=float, default=None, help="capture: requested frame rate; files/folders: frame rate")
    p.add_argument("--pixel-format", default=None,
                   help="capture devices: pixel format (v4l2: mjpeg, yuyv422, ...; OpenCV: a FOURCC such as MJPG)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--no-presence", action="store_true",
                   help="show every outline (no tumour-presence decision); the default uses the checkpoint's "
                        "calibrated threshold when it has one")
    p.add_argument("--presence-threshold", type=float, default=None, help="override the calibrated threshold")
    p.add_argument("--show-after", type=int, default=None,
                   help="frames in a row at or above the threshold before the outline shows (default: checkpoint's)")
    p.add_argument("--hide-after", type=int, default=None,
                   help="frames in a row below the threshold before the outline hides (default: checkpoint's)")
    p.add_argument("--workers", default="auto",
                   help="files on a CPU: frames segmented in parallel, each worker with cores/N threads (auto: 2 "
                        "on a CPU with 2+ cores, 1 for live sources, --temporal or a GPU)")
    add_style_arguments(p)
    p.add_argument("--no-progress", action="store_true")


def _videos_in(folder: Path) -> list[Path]:
    from ..stream.dicom_source import is_dicom_file

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


def _check_args(args: argparse.Namespace) -> None:
    for name in ("width", "height", "max_frames"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise OptionError(f"--{name.replace('_', '-')} {v} is invalid: use a positive number (or leave it out)")
    if args.fps is not None and not args.fps > 0:
        raise OptionError(f"--fps {args.fps} is invalid: use a positive frame rate")
    if not args.speed > 0:
        raise OptionError(f"--speed {args.speed} is invalid: use a number > 0 (2 = twice the recording's pace)")
    if args.speed != 1.0 and not args.realtime:
        raise OptionError("--speed applies to --realtime replay; add --realtime (files are otherwise processed as "
                          "fast as the model runs)")


def plan_workers(args: argparse.Namespace, live: bool) -> tuple[int, int | None]:
    """(segment workers, threads per worker). On a CPU, a file's frames are segmented two at a time with half
    the cores each: a small model uses one core better than two, and the other stages fill the gaps."""
    import torch

    cores = os.cpu_count() or 1
    if args.workers != "auto":
        try:
            n = int(args.workers)
        except ValueError:
            n = 0
        if n < 1:
            raise OptionError(f"--workers {args.workers!r} is invalid: use auto or a positive number")
        if n > 1 and args.temporal:
            raise OptionError("--temporal seeds each frame from the previous one: use --workers 1 with it")
    else:
        on_cpu = args.device == "cpu" or (args.device is None and not torch.cuda.is_available())
        n = 2 if (on_cpu and not live and not args.temporal and cores >= 2) else 1
    if live or args.engine == "triton":  # a model server's client: one request in flight per stream
        n = 1
    threads = args.threads or (max(1, cores // n) if n > 1 else None)
    return n, threads


def run(args: argparse.Namespace) -> int:
    import torch

    from ..stream.outdir import check_out_dir
    from ..stream.pipeline import PipelineConfig
    from ..stream.roi import ROI
    from ..stream.sources import open_source
    from ._engine import make_engine

    _check_args(args)
    if args.serve is not None:
        from ..stream.serve import parse_serve

        parse_serve(args.serve)  # a bad value fails before any work
    roi_arg = (args.roi or "").strip().lower()
    roi = None if roi_arg in ("", "none", "full", "auto") else ROI.parse(args.roi)
    jobs = plan_jobs(args.source, Path(args.out))
    for _, out_i in jobs:  # every output folder is checked before any work
        check_out_dir(out_i, overwrite=args.overwrite)
    source_kw = {"width": args.width, "height": args.height, "fps": args.fps, "pixel_format": args.pixel_format,
                 "realtime": args.realtime, "speed": args.speed}
    # open the first source before loading the model: bad input fails before any work
    first = open_source(jobs[0][0], **source_kw)
    if roi is not None and first.size[0]:
        roi.validate(*first.size)
    if roi_arg == "auto" or (not roi_arg and not first.per_file_outputs):
        roi = "auto"  # screens: the model sees the B-mode sector, masks are clipped to it
    workers, threads = plan_workers(args, first.is_live)
    if threads:
        torch.set_num_threads(threads)
    cfg = PipelineConfig(roi=roi, iterations=args.iterations, temporal=args.temporal, masks=args.masks,
                         write_video=not args.no_video, show=args.show, max_frames=args.max_frames,
                         style=style_from(args), overwrite=args.overwrite, workers=workers,
                         presence=not args.no_presence, presence_threshold=args.presence_threshold,
                         show_frames=args.show_after, hide_frames=args.hide_after, serve=args.serve,
                         deidentify=args.deidentify, html_report=not args.no_report)
    engine = make_engine(args.engine, args.checkpoint, args.bundle, args.device, args.precision, args.cuda_graphs,
                         args.iterations, args.refine_prompts, threads=threads, resize=args.resize,
                         attention=args.attention, server=args.server, server_timeout=args.server_timeout)
    from ._model_id import model_identity
    from ..stream.dicom_source import dicom_info_of

    cfg.model = model_identity(args.checkpoint, args.bundle, engine)
    info = dicom_info_of(first)
    if args.deidentify and info is not None and info.burned_in_annotation:
        print("warning: the DICOM file says its pixels carry burned-in annotation; --deidentify removes identifiers "
              "from the headers of the outputs, not from the pixels of the overlay", file=sys.stderr)
    if not args.no_presence and args.presence_threshold is None and engine.presence.get("threshold") is None:
        print("notice: this checkpoint has no calibrated presence threshold (it was trained without lesion-free "
              "images), so every outline is shown; train with negatives to calibrate one", file=sys.stderr)
    failures = 0
    for i, (spec_i, out_i) in enumerate(jobs):
        try:
            source = first if i == 0 else open_source(spec_i, **source_kw)
            with source:
                summary = run_one(engine, source, out_i, cfg, not args.no_progress)
            print_summary(summary, out_i)
            if summary.get("interrupted_by"):
                return 130
        except ValueError as exc:
            if len(jobs) == 1:
                raise
            failures += 1
            print(f"{spec_i}: skipped: {exc}")
    return 1 if failures else 0

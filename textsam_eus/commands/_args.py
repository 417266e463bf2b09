"""Argument groups that more than one command takes (no command module imports another). Their defaults are the
run settings' (:class:`~textsam_eus.runs.settings.RunSettings`, the one source of them)."""

from __future__ import annotations

import argparse

from ..runs.settings import ATTENTIONS, RESIZES, default


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", default=[],
                   help="dataset: EUS database folder, <root>/{train,val,test} folder, or manifest CSV (repeatable)")
    p.add_argument("--split", choices=["auto", "paper", "existing"], default="auto",
                   help="auto: the layout's splits if it has them, else case-wise; paper: 12/2/4 cancer patients")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of cases for validation (auto split)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="share of cases held out for testing")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--phantom", type=int, default=0, help="add N synthetic phantom frames to training")
    p.add_argument("--phantom-val", type=int, default=0, help="add N synthetic frames to validation")
    p.add_argument("--phantom-size", type=int, default=320, help="side of synthetic frames")
    p.add_argument("--phantom-seed", type=int, default=None, help="seed of the synthetic training frames")
    p.add_argument("--negative-video", action="append", default=[],
                   help="a lesion-free recording (e.g. a healthy pancreas): every frame, cut to its imaging sector, "
                        "is a training negative (repeatable)")
    p.add_argument("--val-negative-video", action="append", default=[],
                   help="a lesion-free recording whose frames are validation negatives (repeatable)")
    p.add_argument("--positive-video", action="append", default=[],
                   help="a recording that shows a tumour in every frame (e.g. a pancreatic cancer), no masks: its "
                        "frames, cut to the imaging sector, train the presence score only (repeatable; needs "
                        "--iou-loss-weight > 0)")
    p.add_argument("--val-positive-video", action="append", default=[],
                   help="a tumour recording whose frames are validation positives for the presence calibration")
    p.add_argument("--calibration-negative-video", action="append", default=[],
                   help="a lesion-free recording (e.g. a healthy pancreas) whose frames, cut to the sector, are "
                        "calibration negatives only: train fits the presence threshold (and the hysteresis) on them, "
                        "never trains or picks the epoch on them; eval --subset calibration scores them (repeatable)")
    p.add_argument("--test-negative-video", action="append", default=[],
                   help="a lesion-free recording held out for judging: train never uses it (it refuses one that is "
                        "also a training or calibration recording); eval --subset test scores its frames (repeatable)")
    p.add_argument("--video-every", type=int, default=1, help="use every N-th frame of the labelled videos")
    p.add_argument("--video-val-tail", type=float, default=0.0,
                   help="move the last FRACTION of the frames of each --negative-video/--positive-video to "
                        "validation (so the presence threshold is calibrated on those recordings too)")
    p.add_argument("--negative-split", default=None, metavar="TRAIN,CAL,TEST",
                   help="honest calibration: the lesion-free images of --data (no mask file: e.g. "
                        "ultrasound_normal/manifest.csv, healthy EUS frames) are split by patient/near-duplicate "
                        "group into train / calibration / test with these shares (e.g. 0.6,0.2,0.2); train fits the "
                        "presence threshold on the calibration part only, eval --subset test judges it on the test "
                        "part (give eval the same data and split flags)")
    p.add_argument("--lesion-free-crops", type=int, default=0, metavar="K",
                   help="more negatives: up to K crops of each lesion image that hold no lesion pixel (each side at "
                        "least half the shorter side), in their image's part of the split (default: 0)")
    p.add_argument("--phantom-negatives", type=int, default=0, help="add N lesion-free phantom frames to training")
    p.add_argument("--phantom-val-negatives", type=int, default=0, help="add N lesion-free phantom frames to "
                   "validation")


TRAIN_VIDEO_FLAGS = ("negative_video", "val_negative_video", "positive_video", "val_positive_video",
                     "calibration_negative_video")


def check_held_out_videos(args: argparse.Namespace) -> None:
    """A --test-negative-video must be no training, validation or calibration recording (same file)."""
    import os

    from ..core.errors import OptionError

    used = {os.path.realpath(v): "--" + flag.replace("_", "-") for flag in TRAIN_VIDEO_FLAGS
            for v in getattr(args, flag, None) or []}
    for v in getattr(args, "test_negative_video", None) or []:
        if os.path.realpath(v) in used:
            raise OptionError(f"{v} is both a --test-negative-video and a {used[os.path.realpath(v)]}: a recording "
                              "that trains or calibrates cannot judge; give another recording for testing")


def negative_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``split_samples`` that :func:`add_data_arguments`'s negative flags give."""
    return {"negative_split": getattr(args, "negative_split", None),
            "lesion_free_crops": getattr(args, "lesion_free_crops", 0) or 0}


# a parser or one of its argument groups (``--help`` lists each group under its title)
Options = argparse._ActionsContainer


def add_engine_arguments(p: Options) -> None:
    p.add_argument("--checkpoint", default=default("checkpoint"),
                   help="TextSAM-EUS checkpoint (.safetensors) or 'demo', the shipped model (default: %(default)s)")
    p.add_argument("--engine", default=default("engine"),
                   help="auto (the fastest available), torch, onnxruntime, tensorrt, or triton (a model server: "
                        "--server) (default: %(default)s)")
    p.add_argument("--server", default=default("server"), metavar="grpc://HOST:PORT",
                   help="--engine triton: the 'textsam-eus serve' to use (checked at connect to serve --checkpoint's "
                        "or --bundle's model)")
    p.add_argument("--server-timeout", type=float, default=default("server_timeout"),
                   help="--engine triton: seconds a request may take before the run stops, finalised "
                        "(default: %(default)s)")
    p.add_argument("--server-reconnect", type=float, default=default("server_reconnect"), metavar="SECONDS",
                   help="--engine triton: how long a lost server may take to come back (serving the same model) "
                        "before the run stops, finalised; live sources drop frames meanwhile; 0 stops at once "
                        "(default: %(default)s)")
    p.add_argument("--bundle", default=default("bundle"),
                   help="deployment bundle folder (onnxruntime/tensorrt; default: exported from --checkpoint once "
                        "and cached)")
    p.add_argument("--device", default=default("device"), help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", default=default("precision"),
                   help="fp32, fp16 (GPU), bf16 (torch), int8 (onnxruntime on the CPU, a bundle made with export "
                        "--int8) (default: %(default)s)")
    p.add_argument("--attention", choices=ATTENTIONS, default=default("attention"),
                   help="torch engine: the image encoder's attention (auto: sdpa on CUDA and at 1024 px on the CPU; "
                        "reference: bit-exact with segment-anything) (default: %(default)s)")
    p.add_argument("--cuda-graphs", action="store_true", help="torch engine on CUDA: capture CUDA graphs")
    p.add_argument("--iterations", type=int, default=default("iterations"), help="refinement iterations (default: 2)")
    p.add_argument("--refine-prompts", default=default("refine_prompts"),
                   help="the prompts each refinement pass takes from the previous mask: none, box, point, "
                        "box+centroid or box+5points (default: %(default)s, the paper's)")
    p.add_argument("--threads", type=int, default=default("threads"),
                   help="CPU threads for torch/onnxruntime (default: all cores, shared among --workers)")
    p.add_argument("--resize", choices=RESIZES, default=default("resize"),
                   help="how frames are resized into the model (default: the weights'; bilinear = PIL's, for "
                        "weights trained with the authors' code)")


def add_file_pipeline_arguments(p: Options, *, inputs: Options | None = None, outputs: Options | None = None) -> None:
    """What is done to each frame of a file (into ``p``), which frames are read (``inputs``) and what is written
    for them (``outputs``); ``stream`` and ``annotate``. ``inputs`` and ``outputs`` default to ``p``."""
    inputs, outputs = inputs or p, outputs or p
    p.add_argument("--roi", default=default("roi"),
                   help="auto (find and track the B-mode imaging sector: the default for videos and capture), none "
                        "(the whole frame: the default for image folders), x,y,w,h, or a preset (eus800x600: the "
                        "database's 711x457 crop)")
    p.add_argument("--temporal", action="store_true",
                   help="seed each frame with the previous confident frame's box/centroid")
    outputs.add_argument("--masks", default=default("masks"),
                         help="comma-separated: png (masks/), video (masks.mkv), nifti (masks.nii.gz), dicom-seg "
                              "(dicom/: SEG + overlay Secondary Capture per frame), coco (masks_coco.json, RLE); or "
                              "none (default: %(default)s)")
    outputs.add_argument("--deidentify", action="store_true",
                         help="DICOM outputs get new UIDs and no patient/study identifiers (other outputs never have "
                              "any)")
    outputs.add_argument("--no-report", action="store_true", help="do not write report.html")
    outputs.add_argument("--no-video", action="store_true", help="do not write the overlay (overlay.mp4 / overlays/)")
    inputs.add_argument("--fps", type=float, default=default("fps"),
                        help="capture: requested frame rate; files/folders: frame rate (default: the file's own)")
    inputs.add_argument("--max-frames", type=int, default=default("max_frames"), metavar="N",
                        help="stop after N frames (default: all; the run counts as complete)")
    p.add_argument("--no-presence", action="store_true",
                   help="show every outline (no tumour-presence decision); the default uses the checkpoint's "
                        "calibrated threshold when it has one")
    p.add_argument("--presence-threshold", type=float, default=default("presence_threshold"),
                   help="override the calibrated threshold (default: the checkpoint's)")
    p.add_argument("--show-after", type=int, default=default("show_after"),
                   help="frames in a row at or above the threshold before the outline shows (default: checkpoint's)")
    p.add_argument("--hide-after", type=int, default=default("hide_after"),
                   help="frames in a row below the threshold before the outline hides (default: checkpoint's)")


def add_style_arguments(p: Options) -> None:
    p.add_argument("--fill-color", default=default("fill_color"),
                   help="mask fill colour: R,G,B, #rrggbb or a name (default: %(default)s)")
    p.add_argument("--contour-color", default=default("contour_color"), help="contour colour (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=default("alpha"), help="fill opacity 0..1 (default: %(default)s)")
    p.add_argument("--no-hud", action="store_true", help="no fps/latency text on the overlay")


def track_given(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` note in ``args._given`` (a set of names) the options typed on the command line, so that
    only those override a ``--config`` file (an option typed with its default value too)."""
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            action.__class__ = _noting(type(action))


_NOTING: dict[type, type] = {}


def _noting(cls: type) -> type:
    """``cls`` (an argparse action class) that also adds its ``dest`` to the namespace's ``_given``."""
    if cls.__name__.startswith("Noted"):
        return cls
    if cls not in _NOTING:
        def __call__(self, parser, namespace, values, option_string=None):
            given = getattr(namespace, "_given", None)
            if given is None:
                given = set()
                setattr(namespace, "_given", given)
            given.add(self.dest)
            cls.__call__(self, parser, namespace, values, option_string)

        _NOTING[cls] = type(f"Noted{cls.__name__}", (cls,), {"__call__": __call__})
    return _NOTING[cls]

"""The settings of one ``stream`` run: every option of ``textsam-eus stream`` with its default, in one place.

:class:`RunSettings` is the one source of those defaults: the command's options read them from here
(:func:`default`), and every other caller (``demo``, ``annotate``'s workers, ``serve``, the benchmarks) builds a
``RunSettings`` instead of wiring :class:`~textsam_eus.stream.pipeline.PipelineConfig` and the engine by hand. Its
:meth:`~RunSettings.to_dict` goes into ``summary.json`` (``"settings"``) and ``stream --config`` takes it back
(:mod:`.settings_file`), so a run can be repeated exactly.

Field names are the options' (``--max-frames`` is ``max_frames``); a bad value raises an
:class:`~textsam_eus.core.errors.OptionError` naming the option and the value. Only the standard library and the
torch-free modules are imported here (``textsam-eus --help`` reads the defaults).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import MAX_PRESENCE_FRAMES, MAX_REFINE_ITERATIONS, RESIZE_METHODS
from ..core.errors import OptionError

__all__ = ["RunSettings", "default", "field_names", "ENGINE_FIELDS", "FILE_PIPELINE_FIELDS", "STYLE_FIELDS",
           "MAX_FPS", "SPEED_RANGE"]

MAX_FPS = 1000.0
SPEED_RANGE = (0.01, 100.0)
ATTENTIONS = ("auto", "sdpa", "reference")  # the torch engine's encoder attention (model.attention)
RESIZES = RESIZE_METHODS


@dataclass
class RunSettings:
    """Every setting of a ``stream`` run, with the command's defaults (the option of each is ``--`` + the name
    with dashes). ``source`` and ``out`` have none: a run needs both, a caller that opens its own source does not."""

    # input: what is read, and how
    source: str | None = None
    realtime: bool = False
    speed: float = 1.0
    width: int | None = None
    height: int | None = None
    pixel_format: str | None = None
    fps: float | None = None
    max_frames: int | None = None
    # outputs
    out: str | None = None
    overwrite: bool = False
    masks: str = "png"
    deidentify: bool = False
    no_report: bool = False
    no_video: bool = False
    no_progress: bool = False
    # model and engine
    checkpoint: str = "demo"
    engine: str = "auto"
    server: str | None = None
    server_timeout: float = 10.0
    server_reconnect: float = 10.0  # seconds a lost model server may take to come back (0: stop at once)
    bundle: str | None = None
    device: str | None = None
    precision: str = "fp32"
    attention: str = "auto"
    cuda_graphs: bool = False
    iterations: int | None = None
    refine_prompts: str = "box+centroid"
    threads: int | None = None
    resize: str | None = None
    workers: str = "auto"
    # segmentation
    roi: str | None = None
    temporal: bool = False
    no_presence: bool = False
    presence_threshold: float | None = None
    show_after: int | None = None
    hide_after: int | None = None
    # overlay style
    fill_color: str = "255,64,64"
    contour_color: str = "255,255,0"
    alpha: float = 0.35
    no_hud: bool = False
    # live view
    serve: str | None = None
    linger: float | None = None
    show: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _typed(f.name, str(f.type), getattr(self, f.name)))
        self._check()

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        """Every value a user gives is bounded: a typo (an extra 0, a billion refinement passes) is an error
        naming the option, not a hang."""
        for name, (lo, hi, what) in _count_bounds().items():
            v = getattr(self, name)
            if v is not None and not lo <= v <= hi:
                raise OptionError(f"--{_flag(name)} {v} is invalid: use {lo} to {hi} ({what})")
        if self.fps is not None and not 0 < self.fps <= MAX_FPS:
            raise OptionError(f"--fps {self.fps} is invalid: use a frame rate > 0 and at most {MAX_FPS:g}")
        if not SPEED_RANGE[0] <= self.speed <= SPEED_RANGE[1]:
            raise OptionError(f"--speed {self.speed} is invalid: use {SPEED_RANGE[0]:g} to {SPEED_RANGE[1]:g} (2 = "
                              "twice the recording's pace)")
        if self.presence_threshold is not None and not math.isfinite(self.presence_threshold):
            raise OptionError(f"--presence-threshold {self.presence_threshold} is invalid: use a finite number (the "
                              "presence score an outline needs)")
        if not math.isfinite(self.server_timeout) or self.server_timeout <= 0:
            raise OptionError(f"--server-timeout {self.server_timeout} is invalid: use seconds > 0")
        if not (math.isfinite(self.server_reconnect) and 0 <= self.server_reconnect <= 3600):
            raise OptionError(f"--server-reconnect {self.server_reconnect} is invalid: use 0..3600 seconds (0: stop "
                              "at once when the server is lost)")
        for name, choices in (("attention", ATTENTIONS), ("resize", RESIZES)):
            v = getattr(self, name)
            if v is not None and v not in choices:
                raise OptionError(f"--{name} {v} is invalid: choose one of {', '.join(choices)}")
        if self.workers != "auto":
            workers = self.workers_number()
            if workers > 1 and self.temporal:
                raise OptionError("--temporal seeds each frame from the previous one: use --workers 1 with it")
        if self.linger is not None:
            if not self.linger >= 0:
                raise OptionError(f"--linger {self.linger} is invalid: use seconds >= 0 (inf: until Ctrl-C)")
            if self.serve is None:
                raise OptionError("--linger applies to the live view; add --serve [HOST:]PORT (or leave --linger "
                                  "out)")
        if self.speed != 1.0 and not self.realtime:
            raise OptionError("--speed applies to --realtime replay; add --realtime (files are otherwise processed "
                              "as fast as the model runs)")
        from ..stream.sinks.registry import parse_mask_formats

        parse_mask_formats(self.masks)  # names the formats
        self.roi_option()  # a bad --roi fails here
        if self.serve is not None:
            from ..stream.view.live_view import parse_serve

            parse_serve(self.serve)

    def workers_number(self) -> int:
        """``--workers`` as a number (not ``auto``): 1 to the pipeline's ``MAX_WORKERS``."""
        from ..stream.pipeline import MAX_WORKERS

        try:
            n = int(self.workers)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_WORKERS:
            raise OptionError(f"--workers {self.workers} is invalid: use auto or 1 to {MAX_WORKERS}")
        return n

    # ------------------------------------------------------------------ derived settings
    def replace(self, **changes: Any) -> "RunSettings":
        """A copy with ``changes`` (checked like the constructor's arguments)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise OptionError(f"unknown run setting {unknown[0]!r}; valid settings: {', '.join(field_names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name (JSON-able): what ``summary.json`` records and ``stream --config`` takes back."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def for_job(self, source: str, out: str | os.PathLike) -> "RunSettings":
        """The settings of one run: ``source`` and ``out`` as absolute paths where they name files or folders
        (so the summary's settings repeat the run from anywhere), and the checkpoint's and bundle's too."""
        checkpoint = self.checkpoint if self.checkpoint == "demo" else _absolute(self.checkpoint)
        return self.replace(source=_absolute(source), out=str(Path(out).expanduser().absolute()),
                            checkpoint=checkpoint, bundle=_absolute(self.bundle))

    def roi_option(self):
        """(``--roi`` lower-cased, the fixed ROI or None)."""
        from ..stream.roi import ROI

        roi_arg = (self.roi or "").strip().lower()
        return roi_arg, (None if roi_arg in ("", "none", "full", "auto") else ROI.parse(self.roi))

    def roi_for(self, source):
        """The pipeline's ``roi`` for ``source``: a fixed ROI (checked against the first frame's size), "auto"
        (videos and capture by default: the model sees the B-mode sector, masks are clipped to it) or None (image
        folders by default, and ``--roi none``)."""
        roi_arg, roi = self.roi_option()
        if roi is not None and source.size[0]:
            roi.validate(*source.size)
        if roi_arg == "auto" or (not roi_arg and not source.per_file_outputs):
            return "auto"
        return roi

    def on_cpu(self) -> bool:
        import torch

        return self.device == "cpu" or (self.device is None and not torch.cuda.is_available())

    def plan_workers(self, live: bool) -> tuple[int, int | None]:
        """(segment workers, threads per worker). On a CPU, a file's frames are segmented two at a time with half
        the cores each: a small model uses one core better than two, and the other stages fill the gaps."""
        cores = os.cpu_count() or 1
        if self.workers != "auto":
            n = self.workers_number()
        else:
            n = 2 if (not live and not self.temporal and cores >= 2 and self.on_cpu()) else 1
        if live or self.engine == "triton":  # a model server's client: one request in flight per stream
            n = 1
        threads = self.threads or (max(1, cores // n) if n > 1 else None)
        return n, threads

    def source_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~textsam_eus.stream.sources.open_source` for these settings."""
        return {"width": self.width, "height": self.height, "fps": self.fps, "pixel_format": self.pixel_format,
                "realtime": self.realtime, "speed": self.speed}

    def open_source(self, spec: str | None = None):
        """Open ``spec`` (default: ``source``) as ``stream`` does."""
        from ..stream.sources import open_source

        spec = spec if spec is not None else self.source
        if spec is None:
            raise OptionError("no source: give --source (a file, folder, device or phantom[:N])")
        return open_source(spec, **self.source_options())

    def style(self):
        from ..stream.overlay import OverlayStyle

        return OverlayStyle(fill_color=self.fill_color, contour_color=self.contour_color, fill_alpha=self.alpha,
                            hud=not self.no_hud)

    def to_pipeline_config(self, source, workers: int | None = None, **extra: Any):
        """The :class:`~textsam_eus.stream.pipeline.PipelineConfig` of a run over ``source`` (an open frame
        source: it decides the default ROI and, unless ``workers`` is given, the segment workers), with these
        settings recorded for ``summary.json``. ``extra``: fields that are not run settings (``handle_signals``,
        ``report``, ``model``, ...) or that the caller decides (``serve`` with a live view it started itself)."""
        from ..stream.pipeline import PipelineConfig

        if workers is None:
            workers = self.plan_workers(source.is_live)[0]
        kw: dict[str, Any] = dict(
            roi=self.roi_for(source), iterations=self.iterations, temporal=self.temporal, masks=self.masks,
            write_video=not self.no_video, max_frames=self.max_frames, style=self.style(), workers=workers,
            presence=not self.no_presence, presence_threshold=self.presence_threshold, show_frames=self.show_after,
            hide_frames=self.hide_after, deidentify=self.deidentify, html_report=not self.no_report,
            show=self.show, overwrite=self.overwrite, serve=self.serve, settings=self.to_dict())
        kw.update(extra)
        return PipelineConfig(**kw)

    # ------------------------------------------------------------------ the engine (exports ONNX into the cache)
    def open_engine(self, threads: int | None = None, *, quiet: bool = False, model: Any = None,
                    batch_encoder: bool = False, export_to_cache: bool = True):
        """The engine these settings name (``threads``: CPU threads, default ``threads``; ``model``: a TextSam
        already in memory instead of ``checkpoint``, torch engine; ``batch_encoder``: onnxruntime's batched
        encoder, for the model server).

        Side effect: onnxruntime without ``bundle`` runs the checkpoint's ONNX export, which is **exported into
        the cache** (:func:`~textsam_eus.runs.engine.cache_dir`) on first use and reused after;
        ``export_to_cache=False`` refuses instead (an error naming ``textsam-eus export``)."""
        from . import engine

        return engine.make_engine(self.engine, model if model is not None else self.checkpoint, self.bundle,
                                  self.device, self.precision, self.cuda_graphs, self.iterations, self.refine_prompts,
                                  quiet=quiet, threads=threads if threads is not None else self.threads,
                                  resize=self.resize, attention=self.attention, server=self.server,
                                  server_timeout=self.server_timeout, server_reconnect=self.server_reconnect,
                                  batch_encoder=batch_encoder,
                                  export_to_cache=export_to_cache)

    def export_to_cache(self, quiet: bool = False) -> Path | None:
        """Export the checkpoint to ONNX into the cache now (once), when :meth:`open_engine` would: onnxruntime
        (also as ``auto``'s choice) without ``bundle``. So that many workers find it made, not make it at once."""
        if self.bundle or self.engine not in ("auto", "onnxruntime") or self.server:
            return None
        from ..engines import fastest_engine
        from .engine import cached_onnx_export

        if self.engine == "onnxruntime" or fastest_engine(None) == "onnxruntime":
            return cached_onnx_export(self.checkpoint, fp16=self.precision == "fp16", quiet=quiet)
        return None

    def model_identity(self, engine) -> dict:
        """The model's name, file and SHA-256 for the outputs that name their algorithm (DICOM SEG, COCO)."""
        from ..core.identity import model_identity
        from .identity import model_file

        return model_identity(engine, *model_file(self.checkpoint, self.bundle))


def _count_bounds() -> dict[str, tuple[int, int, str]]:
    """Setting -> (lowest, highest, what it counts) of every count a user gives."""
    from ..stream.pipeline import MAX_FRAMES

    return {"iterations": (0, MAX_REFINE_ITERATIONS, "refinement passes after the first (default 2)"),
            "threads": (1, 1024, "CPU threads"),
            "max_frames": (1, MAX_FRAMES, "or leave it out for all"),
            "width": (1, 8192, "pixels, or leave it out"), "height": (1, 8192, "pixels, or leave it out"),
            "show_after": (1, MAX_PRESENCE_FRAMES, "frames"), "hide_after": (1, MAX_PRESENCE_FRAMES, "frames")}

# the settings of each shared option group (commands/_args.py): which a command that takes the group has
ENGINE_FIELDS = ("checkpoint", "engine", "server", "server_timeout", "server_reconnect", "bundle", "device",
                 "precision", "attention",
                 "cuda_graphs", "iterations", "refine_prompts", "threads", "resize")
FILE_PIPELINE_FIELDS = ("roi", "temporal", "masks", "deidentify", "no_report", "no_video", "fps", "max_frames",
                        "no_presence", "presence_threshold", "show_after", "hide_after")
STYLE_FIELDS = ("fill_color", "contour_color", "alpha", "no_hud")


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunSettings))


def default(name: str) -> Any:
    """The default of setting ``name`` (what the option's ``--help`` states)."""
    for f in dataclasses.fields(RunSettings):
        if f.name == name:
            return f.default
    raise KeyError(name)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _absolute(value: str | None) -> str | None:
    """``value`` as an absolute path when it names an existing file or folder, else as given ('demo',
    'phantom:90', a device)."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p.absolute()) if p.exists() else value


def _typed(name: str, annotation: str, value: Any) -> Any:
    """``value`` for a field annotated ``annotation`` ("int | None", "float", "str", "bool", ...); whole numbers
    pass as floats, numbers as text settings (``workers = 2``); anything else names the setting."""
    optional = annotation.endswith("| None")
    kind = annotation.split("|")[0].strip()
    if value is None:
        if optional:
            return None
        raise OptionError(f"{name}=None is invalid: give a {_KIND_WORDS[kind]} (default {default(name)!r})")
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise OptionError(f"{name}={value!r} is invalid: use {_KIND_WORDS[kind]} (--{_flag(name)})")


_KIND_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "text"}

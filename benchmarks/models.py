"""Models, bundles and engines for the benchmarks.

Engines are opened by :meth:`textsam_eus.runs.RunSettings.open_engine`, as ``textsam-eus stream`` and ``demo``
open theirs; bundles are written by ``export_bundle`` and ``build_bundle_plans``, as ``textsam-eus export`` does.
A benchmark only chooses where they go (a temporary folder) and times each step.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

RANDOM_VIT_B = "random init (seeded; no SAM/BiomedCLIP weights needed: weights do not change the speed)"


def load_tiny(checkpoint: str, seed: int = 0, fallback: str = "any") -> tuple[Any, str, str | None]:
    """(tiny model, description, note). ``checkpoint``: 'demo', a path, or 'random' (a seeded random tiny model).

    A checkpoint that cannot be loaded falls back to the random model with a note: any checkpoint with
    ``fallback='any'``, only the demo model with ``fallback='demo'`` (other failures raise CheckpointError).
    """
    import torch

    from textsam_eus.model.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
    from textsam_eus.model.registry import build_textsam

    note = None
    if checkpoint != "random":
        try:
            model, _ = load_checkpoint(checkpoint)
            return model.eval(), f"checkpoint {resolve_checkpoint(checkpoint)}", None
        except (CheckpointError, OSError) as exc:
            if fallback != "any" and checkpoint != fallback:
                raise
            note = (f"tiny: checkpoint {checkpoint!r} could not be loaded ({exc}); using a randomly initialised "
                    "tiny model instead (weights do not change the speed; masks differ)")
    torch.manual_seed(seed)
    return build_textsam("tiny").eval(), "random init (seeded)", note


def trained_like_tiny(seed: int = 0):
    """A tiny model whose LoRA/prompt weights are non-trivial (as after training): the tests' model, and
    ``benchmarks/int8_settings.py --checkpoint tiny-test``."""
    import torch

    from textsam_eus.model.registry import build_textsam

    torch.manual_seed(seed)
    model = build_textsam("tiny").eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n or n.startswith("text."):
                p.add_(0.05 * torch.randn_like(p))
    return model


def build_model(preset: str, size: int, checkpoint: str, seed: int) -> tuple[Any, str, str | None]:
    """(model, weights description, note): tiny from ``checkpoint``; vit_b seeded random at input ``size``."""
    if preset == "tiny":
        return load_tiny(checkpoint, seed)
    import torch

    from textsam_eus.model.registry import build_textsam

    torch.manual_seed(seed)
    return build_textsam(preset, image_size=size).eval(), RANDOM_VIT_B, None


class Bundles:
    """ONNX bundles (and TensorRT plans) of the benchmark's models in ``tmp``: each exported once per preset@size
    and precision; ``timed(what, fn)`` records how long each step took."""

    def __init__(self, tmp: Path, timed: Callable[[str, Callable], Any]) -> None:
        self.tmp, self.timed = tmp, timed
        self._folders: dict[tuple, Path] = {}

    def onnx(self, key: tuple[str, int], model, fp16: bool) -> Path:
        """An ONNX bundle for ``model`` (with fp16 graphs too when asked)."""
        from textsam_eus.export.onnx_export import export_bundle

        have = self._folders.get(key + ("onnx",))
        if have is not None and (not fp16 or (have / "encoder_fp16.onnx").is_file()):
            return have
        folder = self.tmp / f"{key[0]}-{key[1]}-onnx{'-fp16' if fp16 else ''}"
        self.timed(f"ONNX export {key[0]}@{key[1]}{' (+fp16 graphs)' if fp16 else ''}",
                   lambda: export_bundle(model, folder, fp16=fp16, verify=False))
        self._folders[key + ("onnx",)] = folder
        return folder

    def onnx_int8(self, key: tuple[str, int], model) -> Path:
        """A copy of the fp32 ONNX bundle with int8 graphs (``textsam-eus export --int8``'s ``add_int8``; its
        parity on the synthetic frames is in the copy's bundle.json)."""
        from textsam_eus.export.errors import ExportError
        from textsam_eus.export.quantize import add_int8

        k = key + ("int8",)
        if k in self._folders:
            return self._folders[k]
        src = self.onnx(key, model, False)
        folder = self.tmp / f"{key[0]}-{key[1]}-onnx-int8"
        shutil.copytree(src, folder)
        try:
            self.timed(f"int8 quantization + parity {key[0]}@{key[1]}", lambda: add_int8(folder))
        except ExportError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise Int8Refused(f"int8 variant not measured: {exc}") from exc
        self._folders[k] = folder
        return folder

    def tensorrt(self, key: tuple[str, int], model, fp16: bool) -> Path:
        """A copy of the ONNX bundle with TensorRT plans (fp16 or fp32)."""
        from textsam_eus.export.tensorrt_build import build_bundle_plans

        k = key + ("trt", fp16)
        if k in self._folders:
            return self._folders[k]
        src = self.onnx(key, model, fp16)
        folder = self.tmp / f"{key[0]}-{key[1]}-trt-{'fp16' if fp16 else 'fp32'}"
        shutil.copytree(src, folder)
        self.timed(f"TensorRT plans {key[0]}@{key[1]} {'fp16' if fp16 else 'fp32'}",
                   lambda: build_bundle_plans(folder, fp16=fp16, timing_cache=self.tmp / "trt-timing.cache"))
        self._folders[k] = folder
        return folder

    def engine(self, engine: str, key: tuple[str, int], model, device: str, precision: str, graphs: bool,
               threads: int, attention: str | None = None, compile_encoder: bool = False):
        """The CLI's engine (``RunSettings.open_engine``) on ``model`` (torch) or on its bundle (onnxruntime,
        tensorrt).

        ``compile_encoder`` (torch): the engine's image encoder goes through ``torch.compile`` and is compiled here,
        on one frame, so the compilation is a setup time; a failure is :class:`CompileUnavailable`.
        """
        from textsam_eus.runs import RunSettings

        bundle = None
        if engine == "onnxruntime":
            bundle = self.onnx_int8(key, model) if precision == "int8" else self.onnx(key, model, precision == "fp16")
        elif engine == "tensorrt":
            bundle = self.tensorrt(key, model, precision == "fp16")
        settings = RunSettings(engine=engine, bundle=str(bundle) if bundle else None, device=device,
                               precision=precision, cuda_graphs=graphs, threads=threads,
                               **({"attention": attention} if engine == "torch" and attention else {}))
        made = settings.open_engine(quiet=True, model=model)
        if compile_encoder:
            compile_torch_encoder(made)
        return made


class VariantUnavailable(RuntimeError):
    """An optional variant cannot be measured here: its row is skipped with this reason, the run goes on."""


class CompileUnavailable(VariantUnavailable):
    """torch.compile does not work here (no compiler, an inductor error)."""


class Int8Refused(VariantUnavailable):
    """``export --int8`` refused the int8 graphs (their masks differ from fp32's here, or cannot be compared)."""


def compile_torch_encoder(engine) -> None:
    """``torch.compile`` the torch engine's image encoder and compile it once on a blank input frame."""
    import numpy as np
    import torch

    sam = engine.model.sam
    eager = sam.image_encoder
    sam.image_encoder = torch.compile(eager)
    try:
        engine.segment(np.zeros((engine.image_size, engine.image_size, 3), np.uint8), iterations=0)
    except Exception as exc:  # noqa: BLE001 - any compiler/inductor failure means: not available here
        sam.image_encoder = eager
        why = " ".join(str(exc).split())[:200]
        raise CompileUnavailable(f"torch.compile {torch.__version__} failed here: {type(exc).__name__}: {why}") \
            from exc


def timed_call(fn: Callable) -> tuple[Any, float]:
    """(fn(), seconds it took)."""
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t

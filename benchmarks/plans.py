"""The benchmark matrix as typed plans: one :class:`Plan` per engine configuration, with the rows it measures or
the reason it is skipped (a backend or GPU missing, or left out by ``--quick``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from .timing import MODES

ENGINES = ("torch", "onnxruntime", "tensorrt")
PRESETS = ("tiny", "vit_b")
TINY_SIZE = 256
PRECISIONS_CPU, PRECISIONS_CUDA = ("fp32",), ("fp32", "fp16", "bf16")
GRAPHS = {"off": (False,), "on": (True,), "both": (False, True)}
COMPILE = {"off": (False,), "on": (True,), "both": (False, True)}
ATTENTIONS = ("reference", "sdpa")
# extra dimensions: each variant plan is measured in mode 'model' at one iteration count and reported as a ratio
# to its baseline row (same configuration, the variant's key at the baseline value)
VARIANT_ITERATIONS, VARIANT_MODES = 2, ("model",)
QUICK_COMPILE_WHY = ("--quick: torch.compile rows are left out (inductor compiles the encoder for minutes on a "
                     "small loaded CPU); run with --compile both")
QUICK_CPU_WHY = ("--quick on CPU: vit_b runs at 512 only, on the torch engine only (ONNX export + session setup of "
                 "ViT-B take ~25 s at 512 on 2 cores, more at 1024), iterations 2, modes model+reference; run "
                 "without --quick for the rest")
QUICK_CUDA_WHY = ("--quick: vit_b runs on the torch engine only (exporting ViT-B and building its TensorRT plans "
                  "would use up the quick time budget)")
QUICK_CPU_NOTE = ("--quick on CPU: vit_b at 512 only, torch engine, iterations 2, modes model+reference, 3 frames "
                  "(ViT-B takes seconds per frame on a small CPU); the full run adds 1024, onnxruntime, iterations "
                  "0/1 and stream")
QUICK_CUDA_NOTE = "--quick on CUDA: vit_b on the torch engine only"


def _csv(text: str | None, flag: str, cast=str, choices: tuple | None = None) -> tuple | None:
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        values = tuple(cast(t) for t in items)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected a comma list of integers") from None
    for v in values:
        if choices is not None and v not in choices:
            raise ValueError(f"{flag}: unknown value {v!r}: choose from {', '.join(choices)}")
    return values


@dataclass(frozen=True)
class MatrixSpec:
    """The matrix flags of ``run.py``, parsed and checked (None: the default for each preset/device)."""

    engines: tuple[str, ...]
    engines_default: bool
    presets: tuple[str, ...]
    sizes: tuple[int, ...] | None
    iterations: tuple[int, ...] | None
    modes: tuple[str, ...] | None
    precisions: tuple[str, ...] | None
    cuda_graphs: str
    frames: int | None
    warmup: int | None
    quick: bool
    attention: tuple[str, ...] | None = None  # torch engine encoder attention (None: the device's default only)
    compile: str = "off"  # torch engine: torch.compile of the image encoder off / on / both
    compile_asked: bool = False

    @classmethod
    def from_args(cls, args) -> "MatrixSpec":
        """Raises ValueError naming the flag and its choices."""
        # run.py's --compile: None = not given (both; --quick leaves the compiled rows out); absent: off
        compile_ = getattr(args, "compile", "off")
        if compile_ is not None and compile_ not in COMPILE:
            raise ValueError(f"--compile: unknown value {compile_!r}: choose from {', '.join(COMPILE)}")
        return cls(engines=_csv(args.engines, "--engines", choices=ENGINES),
                   engines_default=args.engines == ",".join(ENGINES),
                   presets=_csv(args.presets, "--presets", choices=PRESETS),
                   sizes=_csv(args.sizes, "--sizes", int), iterations=_csv(args.iterations, "--iterations", int),
                   modes=_csv(args.modes, "--modes", choices=MODES), precisions=_csv(args.precisions, "--precisions"),
                   cuda_graphs=args.cuda_graphs, frames=args.frames, warmup=args.warmup, quick=args.quick,
                   attention=_csv(getattr(args, "attention", None), "--attention", choices=ATTENTIONS),
                   compile=compile_ or "both", compile_asked=compile_ is not None)


@dataclass(frozen=True)
class QuickLimit:
    """What ``--quick`` keeps of vit_b on one device (None: no limit on that axis)."""

    why: str
    sizes: tuple[int, ...] | None = None
    iterations: tuple[int, ...] | None = None
    modes: tuple[str, ...] | None = None
    engines: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Plan:
    """One engine configuration and the ``iterations x modes`` rows measured with it; or, with ``skip_kind``
    (``unavailable`` or ``quick``), why it is not run. ``whole_size`` skips stand for every engine and precision
    of their preset@size."""

    preset: str
    image_size: int
    engine: str
    device: str
    precision: str
    cuda_graphs: bool
    iterations: tuple[int, ...]
    modes: tuple[str, ...]
    frames: int
    warmup: int
    skip_kind: str | None = None
    reason: str | None = None
    whole_size: bool = False
    attention: str | None = None  # torch engine: the encoder attention ("reference" / "sdpa")
    compile: bool = False  # torch engine: torch.compile of the image encoder
    variant_of: dict[str, Any] | None = None  # a variant: the config values of its baseline row (for the ratio)

    @property
    def key(self) -> tuple[str, int]:
        return self.preset, self.image_size

    def config(self, clip: str, threads: int) -> dict[str, Any]:
        """The configuration a skipped row records (iterations and modes as lists)."""
        its, modes = list(self.iterations), list(self.modes)
        if self.whole_size:
            return {"preset": self.preset, "image_size": self.image_size, "engine": self.engine,
                    "device": self.device, "precision": self.precision, "iterations": its, "mode": modes,
                    "frames": self.frames, "warmup": self.warmup, "clip": clip}
        return {**self._base(clip, threads), "iterations": its, "mode": modes}

    def row_configs(self, clip: str, threads: int, weights: str) -> list[dict[str, Any]]:
        """One configuration per measured row: every iteration count, every mode."""
        base = self._base(clip, threads)
        return [{**base, "iterations": it, "mode": mode, "weights": weights}
                for it, mode in itertools.product(self.iterations, self.modes)]

    def _base(self, clip: str, threads: int) -> dict[str, Any]:
        c = {"preset": self.preset, "image_size": self.image_size, "engine": self.engine, "device": self.device,
             "precision": self.precision, "cuda_graphs": self.cuda_graphs, "threads": threads,
             "frames": self.frames, "warmup": self.warmup, "clip": clip}
        if self.attention is not None:
            c["attention"] = self.attention
        if self.compile:
            c["compile"] = True
        if self.variant_of:
            c["variant_of"] = dict(self.variant_of)
        return c


def row_id(c: dict[str, Any]) -> str:
    def j(v):
        return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)

    attn = c.get("attention")
    extra = (f"/{attn}" if attn and attn != default_attention(c["device"], c["image_size"]) else "") + \
        ("/compile" if c.get("compile") else "")
    return (f"{c['preset']}@{c['image_size']}/{c['engine']}/{c['device']}/{c['precision']}"
            f"{'/graphs' if c.get('cuda_graphs') else ''}{extra}/it{j(c['iterations'])}/{j(c['mode'])}")


def default_attention(device: str, image_size: int) -> str:
    """The torch engine's attention='auto' on ``device`` at ``image_size``."""
    from textsam_eus.model.attention import auto_attention

    return auto_attention(device, image_size)


def base_id(c: dict[str, Any]) -> str | None:
    """The row id of a variant row's baseline (None for a row that is no variant)."""
    if not c.get("variant_of"):
        return None
    base = {k: v for k, v in c.items() if k != "variant_of"}
    base.update(c["variant_of"])
    return row_id({k: v for k, v in base.items() if v is not None})


# ---------------------------------------------------------------------------------------------- per-axis defaults
def sizes_for(preset: str, spec: MatrixSpec, devices: list[str]) -> tuple[int, ...]:
    if preset == "tiny":
        return (TINY_SIZE,)
    # only the CPU would run vit_b: --quick does not even list 1024
    return spec.sizes or ((512,) if spec.quick and devices == ["cpu"] else (1024, 512))


def counts_for(preset: str, device: str, spec: MatrixSpec) -> tuple[int, int]:
    """(measured frames, warm-up frames) per row."""
    if spec.frames is not None:
        frames = spec.frames
    elif preset == "tiny":
        frames = 12 if spec.quick else 50
    elif device == "cpu":
        frames = 3 if spec.quick else 5
    else:
        frames = 10 if spec.quick else 30
    if spec.warmup is not None:
        warmup = spec.warmup
    elif preset == "vit_b" and device == "cpu":
        warmup = 1
    else:
        warmup = 3 if spec.quick else 5
    return frames, warmup


def quick_limit(preset: str, device: str, spec: MatrixSpec) -> QuickLimit | None:
    """ViT-B takes seconds per frame on a small CPU: --quick keeps one size, one iteration count, torch."""
    if preset != "vit_b" or not spec.quick:
        return None
    if device == "cpu":
        return QuickLimit(QUICK_CPU_WHY, sizes=None if spec.sizes is not None else (512,),
                          iterations=None if spec.iterations is not None else (2,),
                          modes=None if spec.modes is not None else ("model", "reference"),
                          engines=("torch",) if spec.engines_default else None)
    return QuickLimit(QUICK_CUDA_WHY, engines=("torch",)) if spec.engines_default else None


def quick_notes(spec: MatrixSpec, devices: list[str]) -> list[str]:
    if not spec.quick or "vit_b" not in spec.presets:
        return []
    return ([QUICK_CPU_NOTE] if "cpu" in devices else []) + (
        [QUICK_CUDA_NOTE] if "cuda" in devices and spec.engines_default else [])


def unavailable(engine: str, device: str, precision: str, avail: dict[str, tuple[bool, str]]) -> str | None:
    """Why ``engine`` cannot run ``precision`` on ``device`` here (None: it can)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return (f"no CUDA GPU visible to torch {torch.__version__} (CUDA build {torch.version.cuda}); "
                "run on an NVIDIA machine (benchmarks/gpu_check.sh)")
    ok, why = avail[engine]
    if engine == "tensorrt":
        if device == "cpu":
            return "TensorRT runs on NVIDIA GPUs only" + ("" if ok else f"; also: {why}")
        if not ok:
            return why
        return "no bf16 TensorRT plans (exported graphs are fp32 or fp16)" if precision == "bf16" else None
    if not ok:
        return why
    if engine == "onnxruntime":
        return _onnxruntime_unavailable(device, precision)
    if device == "cpu" and precision == "fp16":
        return "the torch engine runs fp16 on CUDA only (use fp32 or bf16 on the CPU)"
    if precision == "int8":
        return "int8 is an onnxruntime CPU precision (textsam-eus export --int8); the torch engine runs fp32/fp16/bf16"
    return None


def _onnxruntime_unavailable(device: str, precision: str) -> str | None:
    if precision == "bf16":
        return "the ONNX bundle has fp32, fp16 and int8 graphs only (bf16 is a torch-engine precision)"
    if precision == "int8" and device == "cuda":
        return "int8 graphs (dynamic quantization) run on the CPU execution provider only; on CUDA use fp16"
    if device == "cuda":
        from textsam_eus.core.imports import ONNXRUNTIME_GPU_HINT, is_onnxruntime_gpu_available

        if not is_onnxruntime_gpu_available():
            return f"onnxruntime has no CUDAExecutionProvider here: {ONNXRUNTIME_GPU_HINT}"
    elif precision == "fp16":
        return "fp16 graphs are run on CUDA only (slow or unsupported on the CPU execution provider)"
    return None


# ---------------------------------------------------------------------------------------------- the matrix
def device_plans(preset: str, size: int, device: str, spec: MatrixSpec,
                 avail: dict[str, tuple[bool, str]]) -> list[Plan]:
    """Every engine x precision x CUDA-graphs plan of one preset@size on one device, in run order."""
    frames, warmup = counts_for(preset, device, spec)
    precisions = spec.precisions or (PRECISIONS_CPU if device == "cpu" else PRECISIONS_CUDA)
    iterations, modes = spec.iterations if spec.iterations is not None else (0, 1, 2), spec.modes or MODES
    limit = quick_limit(preset, device, spec)
    if limit and limit.sizes and size not in limit.sizes:
        return [Plan(preset, size, ",".join(spec.engines), device, ",".join(precisions), False, iterations, modes,
                     frames, warmup, "quick", limit.why, whole_size=True)]
    if limit:
        iterations, modes = limit.iterations or iterations, limit.modes or modes
    plans, variants = [], []
    if "int8" in precisions and "fp32" in precisions:  # int8 is measured as a variant of the fp32 rows
        precisions = tuple(p for p in precisions if p != "int8")
    for engine, precision in itertools.product([e for e in ENGINES if e in spec.engines], precisions):
        for graphs in (GRAPHS[spec.cuda_graphs] if engine == "torch" and device == "cuda" else (False,)):
            plan = Plan(preset, size, engine, device, precision, graphs, iterations, modes, frames, warmup,
                        attention=default_attention(device, size) if engine == "torch" else None)
            why = unavailable(engine, device, precision, avail)
            if why:
                plan = _skipped(plan, "unavailable", why)
            elif limit and limit.engines and engine not in limit.engines:
                plan = _skipped(plan, "quick", limit.why)
            plans.append(plan)
            if not plan.skip_kind and not limit:  # --quick's vit_b: no variants (seconds per frame)
                variants += _variants(plan, spec)
    return plans + variants


def _variants(base: Plan, spec: MatrixSpec) -> list[Plan]:
    """The extra-dimension plans of a measured baseline plan: torch attention and torch.compile; onnxruntime int8
    on the CPU (fp32 baselines). Each runs mode 'model' at one iteration count."""
    its = (VARIANT_ITERATIONS,) if VARIANT_ITERATIONS in base.iterations else base.iterations[-1:]
    modes = tuple(m for m in VARIANT_MODES if m in base.modes) or base.modes[:1]
    small = replace(base, iterations=its, modes=modes)
    out = []
    if base.engine == "torch" and base.precision == "fp32" and not base.cuda_graphs:
        for attn in (spec.attention or ()):
            if attn != base.attention:
                out.append(replace(small, attention=attn, variant_of={"attention": base.attention}))
        for on in COMPILE[spec.compile]:
            if on:
                plan = replace(small, compile=True, variant_of={"compile": None})
                out.append(_skipped(plan, "quick", QUICK_COMPILE_WHY) if spec.quick and not spec.compile_asked
                           else plan)
    if base.engine == "onnxruntime" and base.device == "cpu" and base.precision == "fp32" and (
            spec.precisions is None or "int8" in spec.precisions):
        out.append(replace(small, precision="int8", variant_of={"precision": "fp32"}))
    return out


def _skipped(plan: Plan, kind: str, reason: str) -> Plan:
    return replace(plan, skip_kind=kind, reason=reason)


def build_matrix(spec: MatrixSpec, devices: list[str],
                 avail: dict[str, tuple[bool, str]]) -> tuple[list[Plan], list[str]]:
    """(plans in run order, notes about what --quick leaves out)."""
    plans = [plan for preset in spec.presets for size in sizes_for(preset, spec, devices) for device in devices
             for plan in device_plans(preset, size, device, spec, avail)]
    return plans, quick_notes(spec, devices)

"""The deployment bundle: ``bundle.json`` beside the exported graphs / engine plans.

``bundle.json`` records what an engine needs without the text tower or training code: the preset, input size,
pixel mean/std, mask threshold, the precomputed prompt token(s), the graph files with their SHA-256, the versions
of torch/onnx/TensorRT that made them, and for TensorRT plans the GPU they were built on.

Written by :mod:`textsam_eus.export`, read by :mod:`textsam_eus.engines`; both import this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

BUNDLE_FORMAT = "textsam-eus-bundle"
BUNDLE_VERSION = 1
REEXPORT = "re-export the bundle ('textsam-eus export --checkpoint CKPT --out DIR')"


class BundleError(UserError, ValueError):
    """A deployment bundle is missing, altered or made for something else."""


class PlanMismatchError(BundleError):
    """A TensorRT plan was built for another GPU or TensorRT version."""


def check_plan_tag(plan: str | Path, tag: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise PlanMismatchError when a plan's tag differs from this machine's GPU or TensorRT version."""
    problems = [f"{k}: plan {tag.get(k)!r}, here {current.get(k)!r}"
                for k in ("gpu", "compute_capability", "tensorrt") if tag.get(k) != current.get(k)]
    if problems:
        raise PlanMismatchError(f"{plan} was built for another GPU or TensorRT version ({'; '.join(problems)}). "
                                "TensorRT plans are not portable: rebuild them here with "
                                "'textsam-eus export --bundle DIR --tensorrt' (or use --engine onnxruntime)")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Bundle:
    preset: str
    image_size: int
    embedding_shape: list[int]  # (1, C, g, g)
    lowres_size: int
    pixel_mean: list[float]
    pixel_std: list[float]
    mask_threshold: float
    refine_iterations: int
    prompt_tokens: list[list[float]]  # (T, C): the text token(s), first among the sparse tokens
    files: dict[str, str] = field(default_factory=dict)  # role -> file name, e.g. "encoder" -> "encoder.onnx"
    hashes: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    versions: dict[str, str] = field(default_factory=dict)  # torch / onnx / onnxruntime / tensorrt
    tensorrt: dict[str, Any] = field(default_factory=dict)  # role -> plan file; gpu, compute capability, fp16
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint path, its config
    # int8 CPU graphs (files "<role>_int8"): quantization method, roles, parity (mean/min mask IoU vs fp32, frames)
    int8: dict[str, Any] = field(default_factory=dict)
    # tumour presence (the decoders' iou_predictions output of the text-only pass); None = off (older bundles)
    presence_threshold: float | None = None
    presence_show_frames: int = 3
    presence_hide_frames: int = 5
    resize: str = "area"  # how frames are resized into the input (TextSamConfig.resize); "area" in older bundles
    folder: str = ""

    def path(self, role: str) -> Path:
        if role not in self.files:
            raise BundleError(f"bundle {self.folder} has no {role!r} file (it has: {sorted(self.files)}); "
                              "re-export it with 'textsam-eus export'")
        return Path(self.folder) / self.files[role]

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("folder")
        return json.dumps({"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, **d}, indent=2)


SERVED_ROLES = ("encoder", "decoder_text", "decoder_refine")  # the fp32 graphs: what the model *is*
BATCH_ENCODER_ROLE = "encoder_batch"  # the encoder with a dynamic batch axis, for a model server (export --serving)


def model_id(bundle: Bundle) -> str:
    """The model's identity (16 hex digits): SHA-256 over its fp32 graphs' hashes, the prompt token(s) and the values
    the pre-/post-processing uses. Extra graphs (fp16, int8, the batched encoder of ``export --serving``) and TensorRT
    plans do not change it: they run the same model. A model server publishes it; a client checks it at connect."""
    values = {"graphs": [bundle.hashes.get(bundle.files.get(r, ""), "") for r in SERVED_ROLES],
              "prompt_tokens": bundle.prompt_tokens, "image_size": bundle.image_size,
              "pixel_mean": bundle.pixel_mean, "pixel_std": bundle.pixel_std,
              "mask_threshold": bundle.mask_threshold, "lowres_size": bundle.lowres_size, "resize": bundle.resize}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def write_bundle(folder: str | Path, bundle: Bundle) -> Path:
    folder = Path(folder)
    bundle.hashes = {}
    for role, name in {**bundle.files, **{k: v for k, v in bundle.tensorrt.items() if k.startswith("plan_")}}.items():
        bundle.hashes[name] = sha256(folder / name)
    path = folder / "bundle.json"
    path.write_text(bundle.to_json())
    bundle.folder = str(folder)
    return path


def read_bundle(folder: str | Path, verify: bool = True) -> Bundle:
    """Read ``folder/bundle.json`` and check its values.

    Every listed file (graphs and TensorRT plans) must lie inside ``folder`` and have a sha256 in bundle.json;
    with ``verify`` each must also exist with that hash (``verify=False`` skips only reading the files).
    """
    folder = Path(folder)
    path = folder / "bundle.json"
    if not path.is_file():
        raise BundleError(f"{folder} is not a deployment bundle: bundle.json is missing (make one with "
                          "'textsam-eus export --checkpoint CKPT --out DIR')")
    try:
        d = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); re-export the bundle") from exc
    if not isinstance(d, dict) or d.pop("format", None) != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not a TextSAM-EUS bundle")
    version = d.pop("version", None)
    if version != BUNDLE_VERSION:
        raise BundleError(f"{path} has bundle version {version}, this textsam-eus reads version {BUNDLE_VERSION}; "
                          "re-export it with this version")
    try:
        bundle = Bundle(**d, folder=str(folder))
    except TypeError as exc:
        raise BundleError(f"{path} has unexpected fields ({exc}); re-export the bundle") from exc
    _check_values(bundle, path)
    for role, name in _listed_files(bundle, path).items():
        _check_contained(folder, role, name, path)
        digest = bundle.hashes.get(name)
        if not isinstance(digest, str) or not digest:
            raise BundleError(f"{path}: bundle file {name!r} ({role}) has no sha256 in bundle.json; {REEXPORT}")
        if verify:
            _check_digest(folder / name, digest)
    return bundle


# ---------------------------------------------------------------------- reading: the listed files


def _listed_files(bundle: Bundle, path: Path) -> dict[str, str]:
    """role -> file name for the graphs and the TensorRT plans; the sections must be name tables."""
    for key in ("files", "hashes", "tensorrt", "versions", "source", "int8"):
        if not isinstance(getattr(bundle, key), dict):
            _invalid(path, key, getattr(bundle, key), "a JSON object")
    listed = {**bundle.files, **{k: v for k, v in bundle.tensorrt.items() if k.startswith("plan_")}}
    for role, name in listed.items():
        if not isinstance(name, str) or not name:
            _invalid(path, f"files[{role!r}]" if role in bundle.files else f"tensorrt[{role!r}]", name, "a file name")
    return listed


def _check_contained(folder: Path, role: str, name: str, path: Path) -> None:
    """Refuse a name that, resolved (``..``, absolute, symlinks followed), is not inside ``folder``."""
    root = folder.resolve()
    target = (folder / name).resolve()
    if target == root or not target.is_relative_to(root):
        raise BundleError(f"{path}: entry {role!r} -> {name!r} is not a file inside the bundle folder "
                          f"(it resolves to {target}); {REEXPORT}")


def _check_digest(f: Path, digest: str) -> None:
    if not f.is_file():
        raise BundleError(f"bundle file {f} is missing; re-export the bundle")
    got = sha256(f)
    if got != digest:
        raise BundleError(f"{f} does not match bundle.json (sha256 {got[:12]}... expected {digest[:12]}...): "
                          "the file was changed or belongs to another export; re-export the bundle")


# ---------------------------------------------------------------------- reading: the values


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _numbers(v: Any, n: int, ok=_is_finite) -> bool:
    return isinstance(v, list) and len(v) == n and all(ok(x) for x in v)


_VALUE_CHECKS = [  # field, check, what it must be
    ("image_size", lambda v: _is_int(v) and v > 0 and v % 16 == 0, "a positive int, a multiple of 16"),
    ("embedding_shape", lambda v: _numbers(v, 4, lambda x: _is_int(x) and x > 0), "4 positive ints"),
    ("lowres_size", lambda v: _is_int(v) and v > 0, "a positive int"),
    ("pixel_mean", lambda v: _numbers(v, 3), "3 finite numbers"),
    ("pixel_std", lambda v: _numbers(v, 3, lambda x: _is_finite(x) and x > 0), "3 finite numbers > 0"),
    ("mask_threshold", _is_finite, "a finite number"),
    ("refine_iterations", lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    ("presence_threshold", lambda v: v is None or (_is_finite(v) and 0 <= v <= 1), "null or a number in [0, 1]"),
    ("presence_show_frames", lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    ("presence_hide_frames", lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    ("resize", lambda v: v in ("area", "bilinear"), "'area' or 'bilinear'"),
]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _invalid(path: Path, name: str, value: Any, expected: str) -> None:
    raise BundleError(f"{path}: {name} is {_short(value)}, expected {expected}; re-export the bundle")


def _check_values(bundle: Bundle, path: Path) -> None:
    """Hand-edited or damaged values: each field must have the type and range an engine relies on."""
    for name, ok, expected in _VALUE_CHECKS:
        if not ok(getattr(bundle, name)):
            _invalid(path, name, getattr(bundle, name), expected)
    width = bundle.embedding_shape[1]
    tokens = bundle.prompt_tokens
    if not (isinstance(tokens, list) and tokens and all(_numbers(row, width) for row in tokens)):
        _invalid(path, "prompt_tokens", tokens,
                 f"a non-empty list of rows of {width} finite numbers (embedding_shape[1])")

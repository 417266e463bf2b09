"""The deployment bundle: ``bundle.json`` beside the exported graphs / engine plans.

``bundle.json`` records what an engine needs without the text tower or training code: the preset, input size,
pixel mean/std, mask threshold, the precomputed prompt token(s), the graph files with their SHA-256, the versions
of torch/onnx/TensorRT that made them, and for TensorRT plans the GPU they were built on.

Written by :mod:`textsam_eus.export`, read by :mod:`textsam_eus.engines`; both import this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BUNDLE_FORMAT = "textsam-eus-bundle"
BUNDLE_VERSION = 1


class BundleError(ValueError):
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
    """Read ``folder/bundle.json``; with ``verify`` every listed file must exist with its recorded hash."""
    folder = Path(folder)
    path = folder / "bundle.json"
    if not path.is_file():
        raise BundleError(f"{folder} is not a deployment bundle: bundle.json is missing (make one with "
                          "'textsam-eus export --checkpoint CKPT --out DIR')")
    try:
        d = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); re-export the bundle") from exc
    if d.pop("format", None) != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not a TextSAM-EUS bundle")
    version = d.pop("version", None)
    if version != BUNDLE_VERSION:
        raise BundleError(f"{path} has bundle version {version}, this textsam-eus reads version {BUNDLE_VERSION}; "
                          "re-export it with this version")
    try:
        bundle = Bundle(**d, folder=str(folder))
    except TypeError as exc:
        raise BundleError(f"{path} has unexpected fields ({exc}); re-export the bundle") from exc
    if verify:
        for name, digest in bundle.hashes.items():
            f = folder / name
            if not f.is_file():
                raise BundleError(f"bundle file {f} is missing; re-export the bundle")
            got = sha256(f)
            if got != digest:
                raise BundleError(f"{f} does not match bundle.json (sha256 {got[:12]}... expected {digest[:12]}...): "
                                  "the file was changed or belongs to another export; re-export the bundle")
    return bundle

"""The deployment bundle: ``bundle.json`` beside the exported graphs / engine plans.

``bundle.json`` records what an engine needs without the text tower or training code: the preset, input size,
pixel mean/std, mask threshold, the precomputed prompt token(s), the graph files with their SHA-256 (and those of
the ONNX external-data files a graph references), the versions of torch/onnx/TensorRT that made them, and for
TensorRT plans the GPU they were built on.

Reading checks every value's type and range (an edited ``image_size`` of 100000 is refused before an engine tries
a 16 GB input) and that the shapes agree with each other (``embedding_shape`` (1, C, g, g) with g dividing
``image_size``, ``lowres_size`` = 4 g, prompt rows of C numbers); the engines then check their graphs' inputs and
outputs against these values (:mod:`textsam_eus.engines.graph_io`).

Written by :mod:`textsam_eus.export`, read by :mod:`textsam_eus.engines`; both import this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import MAX_PRESENCE_FRAMES, MAX_REFINE_ITERATIONS
from ..core.errors import UserError
from ..core.hashing import file_sha256

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
    # graph file name -> the ONNX external-data files it references (hashed too; written by write_bundle)
    external_data: dict[str, list[str]] = field(default_factory=dict)
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


def external_data_files(graph: str | Path) -> list[str]:
    """The external-data file names (``location``) an ONNX graph's tensors reference, sorted; [] for a graph
    without external data or a file that is no ONNX graph (ONNX Runtime reports that one when it loads it)."""
    import onnx

    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a graph: no references to list (the engine's load names the file)
        return []

    def tensors(nodes, initializers=(), sparse=()):
        yield from initializers
        for sp in sparse:
            yield from (sp.values, sp.indices)
        for node in nodes:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    yield from tensors(sub.node, sub.initializer, sub.sparse_initializer)

    g = model.graph
    found = {next((e.value for e in t.external_data if e.key == "location"), "")
             for t in [*tensors(g.node, g.initializer, g.sparse_initializer),
                       *(t for f in model.functions for t in tensors(f.node))]
             if t.data_location == onnx.TensorProto.EXTERNAL}
    return sorted(found)
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
    """Write ``folder/bundle.json``: the hashes of every listed graph and plan, and of the external-data files the
    ONNX graphs reference (listed in ``external_data``), are computed here."""
    folder = Path(folder)
    bundle.hashes = {}
    bundle.external_data = {}
    for name in bundle.files.values():
        if name.endswith(".onnx"):
            refs = [r for r in external_data_files(folder / name) if r]
            if refs:
                bundle.external_data[name] = refs
    listed = {**bundle.files, **{k: v for k, v in bundle.tensorrt.items() if k.startswith("plan_")},
              **{f"{g}:{n}": n for g, refs in bundle.external_data.items() for n in refs}}
    for role, name in listed.items():
        bundle.hashes[name] = file_sha256(folder / name)
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
    """role -> file name for the graphs, the TensorRT plans and the graphs' external data (role "GRAPH:NAME");
    the sections must be name tables."""
    for key in ("files", "hashes", "tensorrt", "versions", "source", "int8", "external_data"):
        if not isinstance(getattr(bundle, key), dict):
            _invalid(path, key, getattr(bundle, key), "a JSON object")
    listed = {**bundle.files, **{k: v for k, v in bundle.tensorrt.items() if k.startswith("plan_")}}
    for role, name in listed.items():
        if not isinstance(name, str) or not name:
            _invalid(path, f"files[{role!r}]" if role in bundle.files else f"tensorrt[{role!r}]", name, "a file name")
    for graph, refs in bundle.external_data.items():
        if graph not in bundle.files.values():
            _invalid(path, f"external_data[{graph!r}]", refs, "the external data of a graph listed in files")
        if not (isinstance(refs, list) and all(isinstance(n, str) and n for n in refs)):
            _invalid(path, f"external_data[{graph!r}]", refs, "a list of file names")
        listed.update({f"{graph}:{n}": n for n in refs})
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
    got = file_sha256(f)
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


def _in(lo: float, hi: float, ok=_is_finite):
    return lambda x: ok(x) and lo <= x <= hi


MAX_IMAGE_SIZE = 4096  # SAM's own is 1024; larger inputs are refused before an engine allocates them
MAX_WIDTH = 4096  # prompt / embedding channels (SAM: 256)
MAX_PROMPT_TOKENS = 64
SCORE_LIMIT = 1e6  # |mask_threshold| (a logit) and |presence_threshold| (an IoU-head score): finite, bounded

_VALUE_CHECKS = [  # field, check, what it must be
    ("image_size", lambda v: _in(32, MAX_IMAGE_SIZE, _is_int)(v) and v % 16 == 0,
     f"an int in [32, {MAX_IMAGE_SIZE}], a multiple of 16"),
    ("embedding_shape", lambda v: _numbers(v, 4, _in(1, MAX_WIDTH, _is_int)), f"4 ints in [1, {MAX_WIDTH}]"),
    ("lowres_size", _in(1, MAX_IMAGE_SIZE, _is_int), f"an int in [1, {MAX_IMAGE_SIZE}]"),
    ("pixel_mean", lambda v: _numbers(v, 3, _in(0, 255)), "3 numbers in [0, 255]"),
    ("pixel_std", lambda v: _numbers(v, 3, _in(1e-3, 255)), "3 numbers in [0.001, 255]"),
    ("mask_threshold", _in(-SCORE_LIMIT, SCORE_LIMIT), f"a number in [-{SCORE_LIMIT:g}, {SCORE_LIMIT:g}]"),
    ("refine_iterations", lambda v: _is_int(v) and 0 <= v <= MAX_REFINE_ITERATIONS,
     f"an int in [0, {MAX_REFINE_ITERATIONS}]"),
    # the presence score is the IoU head's raw output (not confined to [0, 1]); the threshold is on its scale
    ("presence_threshold", lambda v: v is None or _in(-SCORE_LIMIT, SCORE_LIMIT)(v),
     f"null or a number in [-{SCORE_LIMIT:g}, {SCORE_LIMIT:g}]"),
    ("presence_show_frames", _in(1, MAX_PRESENCE_FRAMES, _is_int), f"an int in [1, {MAX_PRESENCE_FRAMES}]"),
    ("presence_hide_frames", _in(1, MAX_PRESENCE_FRAMES, _is_int), f"an int in [1, {MAX_PRESENCE_FRAMES}]"),
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
    one, width, g, g2 = bundle.embedding_shape
    size = bundle.image_size
    if one != 1 or g != g2 or size % g or size // g < 2:
        _invalid(path, "embedding_shape", bundle.embedding_shape,
                 f"[1, C, g, g] with g = image_size / patch size (image_size {size}: e.g. {size // 16} for patches "
                 "of 16)")
    if bundle.lowres_size != 4 * g:
        _invalid(path, "lowres_size", bundle.lowres_size, f"4 x the embedding grid, {4 * g} (embedding_shape {g})")
    tokens = bundle.prompt_tokens
    if not (isinstance(tokens, list) and 0 < len(tokens) <= MAX_PROMPT_TOKENS
            and all(_numbers(row, width) for row in tokens)):
        _invalid(path, "prompt_tokens", tokens,
                 f"a list of 1 to {MAX_PROMPT_TOKENS} rows of {width} finite numbers (embedding_shape[1])")

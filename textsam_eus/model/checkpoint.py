"""Our checkpoint format: one ``.safetensors`` file with the config as JSON in its metadata.

It holds the trainable tensors (``contents=trainable``; the base weights are reloaded from the official files the
config names, see :mod:`.pretrained`), or every tensor when the base weights were random and cannot be reloaded
from files (``contents=full``, e.g. the tiny demo).

Mismatches raise :class:`~.weights.CheckpointError` listing the first few missing/unexpected keys or wrong shapes,
the file and the preset expected. Imports run one way: checkpoint -> registry -> pretrained -> weights.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import ConfigError, TextSamConfig
from ..core.files import atomic_path
from .registry import build_textsam
from .weights import CheckpointError, check_state_dict, torch_load_problem  # noqa: F401 (re-exported)

FORMAT = "textsam-eus"
FORMAT_VERSION = "1"


def demo_checkpoint_path() -> Path:
    """The tiny demo model shipped inside the package."""
    return Path(str(resources.files("textsam_eus") / "weights" / "demo_tiny.safetensors"))


def resolve_checkpoint(path: str | Path) -> Path:
    """``"demo"`` names the shipped demo model; anything else is a path."""
    if str(path) == "demo":
        p = demo_checkpoint_path()
        if not p.is_file():
            raise CheckpointError(f"the shipped demo model is missing from the installation ({p}); "
                                  "reinstall textsam-eus or pass --checkpoint PATH")
        return p
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p} (pass a .safetensors file written by "
                              "'textsam-eus train', or 'demo' for the shipped demo model)")
    return p


def _needs_full(model: nn.Module) -> bool:
    cfg = model.cfg
    return cfg.finetune == "full" or cfg.sam_checkpoint is None or cfg.biomedclip_dir is None


def save_checkpoint(model: nn.Module, path: str | Path, *, full: bool | None = None,
                    extra: dict[str, Any] | None = None, half_frozen: bool = False, half_all: bool = False) -> Path:
    """Write ``model`` (a TextSam) to one safetensors file; returns the path.

    ``full=None`` stores every tensor when the base weights cannot be reloaded from files, else only the trainable
    ones. ``half_frozen`` stores frozen tensors in float16, ``half_all`` every floating tensor (smaller shipped
    files; loading casts back to the model's dtype).
    """
    from safetensors.torch import save_file

    full = _needs_full(model) if full is None else full
    trainable = model.trainable_state_dict()
    tensors = dict(model.state_dict()) if full else trainable
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        if v.is_floating_point() and (half_all or (half_frozen and k not in trainable)):
            v = v.half()
        out[k] = v.contiguous()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "contents": "full" if full else "trainable",
            "config": json.dumps(model.cfg.to_dict()), "extra": json.dumps(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as part:  # written whole, then renamed: never a torn file
        save_file(out, str(part), metadata=meta)
    return path


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _damaged(path: Path, what: str, exc: BaseException | None = None) -> CheckpointError:
    why = f"{what} ({_one_line(exc)})" if exc is not None else what
    return CheckpointError(f"{path} is damaged or not a TextSAM-EUS checkpoint: {why}; restore it, or write it "
                           "again with 'textsam-eus train'")


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"cannot read {path} as a safetensors checkpoint ({_one_line(exc)}): expected a file "
                              "written by 'textsam-eus train'; if it is one, it is truncated or damaged: restore "
                              "it or train again") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a TextSAM-EUS checkpoint (metadata format={meta.get('format')!r}); "
                              "official SAM .pth files go to --sam-checkpoint, not --checkpoint")
    version = meta.get("format_version", FORMAT_VERSION)
    if not str(version).isdigit():
        raise _damaged(path, f"its format_version {version!r} is not a number")
    if int(version) > int(FORMAT_VERSION):
        raise CheckpointError(f"{path} has checkpoint format version {version}, newer than this textsam-eus reads "
                              f"(version {FORMAT_VERSION}): upgrade textsam-eus (pip install -U textsam-eus)")
    parsed = {}
    for key, default in (("config", None), ("extra", "{}")):
        text = meta.get(key, default)
        if text is None:
            raise _damaged(path, f"its metadata has no {key!r}")
        try:
            parsed[key] = json.loads(text)
        except ValueError as exc:
            raise _damaged(path, f"its metadata {key!r} is not valid JSON", exc) from None
        if not isinstance(parsed[key], dict):
            raise _damaged(path, f"its metadata {key!r} is not a JSON object")
    return {"contents": meta.get("contents", "trainable"), "config": parsed["config"], "extra": parsed["extra"],
            "path": path}


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or corrupt file is a one-line CheckpointError naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors' errors for truncated headers/data, OS errors
        raise _damaged(Path(path), "its tensors cannot be read", exc) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", **config_overrides: Any):
    """Build the model described by a checkpoint and load its tensors. Returns (model, extra)."""

    meta = read_checkpoint_meta(path)
    try:
        cfg = TextSamConfig.from_dict(meta["config"])
    except (ConfigError, TypeError) as exc:  # a field this version does not know, or a hand-edited value
        raise CheckpointError(f"{meta['path']}: its model config cannot be used ({_one_line(exc)}); write it "
                              "again with this textsam-eus, or upgrade textsam-eus if a newer one wrote it") from None
    if config_overrides:
        cfg = cfg.replace(**config_overrides)
    full = meta["contents"] == "full"
    model = build_textsam(cfg, load_base_weights=not full)
    tensors = load_tensors(meta["path"])
    expected = dict(model.state_dict()) if full else model.trainable_state_dict()
    check_state_dict(expected, tensors, file=meta["path"], what=f"a TextSAM-EUS model of preset {cfg.preset!r} "
                     f"(lora_rank={cfg.lora_rank}, n_ctx={cfg.n_ctx}, prompt_depth={cfg.prompt_depth})")
    state = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    model.load_state_dict(state, strict=full)
    return model.to(map_location), meta["extra"]

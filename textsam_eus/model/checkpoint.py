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

from .config import TextSamConfig
from .registry import build_textsam
from .weights import CheckpointError, check_state_dict

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
    save_file(out, str(path), metadata=meta)
    return path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"cannot read {path} as a safetensors checkpoint ({exc}); "
                              "expected a file written by 'textsam-eus train'") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a TextSAM-EUS checkpoint (metadata format={meta.get('format')!r}); "
                              "official SAM .pth files go to --sam-checkpoint, not --checkpoint")
    return {"contents": meta.get("contents", "trainable"), "config": json.loads(meta["config"]),
            "extra": json.loads(meta.get("extra", "{}")), "path": path}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", **config_overrides: Any):
    """Build the model described by a checkpoint and load its tensors. Returns (model, extra)."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(path)
    cfg = TextSamConfig.from_dict(meta["config"])
    if config_overrides:
        cfg = cfg.replace(**config_overrides)
    full = meta["contents"] == "full"
    model = build_textsam(cfg, load_base_weights=not full)
    tensors = load_file(str(meta["path"]))
    expected = dict(model.state_dict()) if full else model.trainable_state_dict()
    check_state_dict(expected, tensors, file=meta["path"], what=f"a TextSAM-EUS model of preset {cfg.preset!r} "
                     f"(lora_rank={cfg.lora_rank}, n_ctx={cfg.n_ctx}, prompt_depth={cfg.prompt_depth})")
    state = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    model.load_state_dict(state, strict=full)
    return model.to(map_location), meta["extra"]

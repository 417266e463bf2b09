"""Weights: the official SAM ``.pth``, a local BiomedCLIP folder, and our own safetensors checkpoints.

* Official SAM (``sam_vit_b_01ec64.pth``; MedSAM's ViT-B file has the same keys): a plain state dict of the
  ``Sam`` module (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), loaded before LoRA is applied.
* BiomedCLIP folder: ``open_clip_config.json``, ``open_clip_pytorch_model.bin`` (or ``open_clip_model.safetensors``)
  with the CLIP state dict (we take its ``text.*`` part) and the tokenizer's ``vocab.txt``. Fully offline.
* Ours: one ``.safetensors`` file holding the trainable tensors (``contents=trainable``), or every tensor when the
  base weights were random and cannot be reloaded from files (``contents=full``, e.g. the tiny demo), with the
  config as JSON in the file's metadata.

Every ``torch.load`` uses ``weights_only=True``. Mismatches raise :class:`CheckpointError` listing the first few
missing/unexpected keys or wrong shapes, the file and the preset expected.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError, TextSamConfig

FORMAT = "textsam-eus"
FORMAT_VERSION = "1"
_IGNORED_TEXT_KEYS = ("transformer.pooler.", "transformer.embeddings.position_ids")


class CheckpointError(ValueError):
    """A weight file does not match the model it is loaded into."""


def _first(items: list[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... ({len(items)} in all)" if len(items) > n else "")


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], *, file: str | Path,
                     what: str) -> None:
    """Raise CheckpointError unless ``found`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(f"{k} {tuple(found[k].shape)} (expected {tuple(expected[k].shape)})"
                   for k in set(expected) & set(found) if tuple(found[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes: {_first(wrong)}")
        raise CheckpointError(f"{file} does not match {what}: " + "; ".join(parts))


def torch_load_problem(exc: BaseException) -> str:
    """A short, one-line reason why ``torch.load(..., weights_only=True)`` failed, without PyTorch's advice to
    retry with ``weights_only=False`` (which would run whatever code the file holds)."""
    text = " ".join(str(exc).split())
    if "weights_only" in text or "Weights only load failed" in text:
        detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        why = detail.group(1).strip()[:100] if detail else ""
        return ("not a PyTorch file of plain tensors and values: truncated, damaged, another kind of file, or "
                "holding Python objects, which are not loaded for safety" + (f"; {why}" if why else ""))
    return f"{type(exc).__name__}: {text[:200]}"


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files
        raise CheckpointError(f"cannot read {path} as a PyTorch weights file ({torch_load_problem(exc)}); "
                              "expected a state dict saved with torch.save") from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state dict (dict of tensors)")
    return obj


# ---------------------------------------------------------------------------------------------- SAM
def load_sam_checkpoint(sam: nn.Module, path: str | Path, preset: str = "vit_b") -> None:
    """Load an official SAM/MedSAM state dict into a plain (not yet LoRA-wrapped) ``Sam``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SAM checkpoint not found: {path} (expected the official file, e.g. "
                              "sam_vit_b_01ec64.pth, or MedSAM's medsam_vit_b.pth, on local disk)")
    state = _torch_load(path)
    check_state_dict(sam.state_dict(), state, file=path, what=f"SAM of preset {preset!r}")
    sam.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------- BiomedCLIP
def biomedclip_vocab(folder: str | Path) -> Path:
    vocab = Path(folder) / "vocab.txt"
    if not vocab.is_file():
        raise CheckpointError(f"{folder} has no vocab.txt: a BiomedCLIP folder needs open_clip_config.json, "
                              "open_clip_pytorch_model.bin (or open_clip_model.safetensors) and vocab.txt")
    return vocab


def load_biomedclip_text(tower: nn.Module, folder: str | Path, cfg: TextSamConfig) -> None:
    """Load the text tower of a local BiomedCLIP folder into an open_clip ``HFTextEncoder``."""
    folder = Path(folder)
    config_file = folder / "open_clip_config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} is not a BiomedCLIP folder: open_clip_config.json is missing")
    try:
        model_cfg = json.loads(config_file.read_text())["model_cfg"]
        text_cfg = model_cfg["text_cfg"]
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{config_file} is not an open_clip config (needs model_cfg.text_cfg)") from exc
    checks = [("embed_dim", model_cfg.get("embed_dim"), cfg.text.embed_dim),
              ("text_cfg.hf_proj_type", text_cfg.get("hf_proj_type", text_cfg.get("proj_type")), cfg.text.proj_type),
              ("text_cfg.context_length", text_cfg.get("context_length"), cfg.text.context_length)]
    for name, got, want in checks:
        if got is not None and got != want:
            raise CheckpointError(f"{config_file}: {name}={got!r} but preset {cfg.preset!r} expects {want!r}")
    weights = folder / "open_clip_model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        weights = folder / "open_clip_pytorch_model.bin"
        if not weights.is_file():
            raise CheckpointError(f"{folder} has neither open_clip_pytorch_model.bin nor open_clip_model.safetensors")
        state = _torch_load(weights)
    text_state = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    text_state = {k: v for k, v in text_state.items() if not k.startswith(_IGNORED_TEXT_KEYS)}
    if not text_state:
        raise CheckpointError(f"{weights} has no 'text.*' tensors: is it a BiomedCLIP (open_clip) checkpoint?")
    check_state_dict(tower.state_dict(), text_state, file=weights,
                     what=f"the BiomedCLIP text tower of preset {cfg.preset!r}")
    tower.load_state_dict(text_state, strict=True)


# ---------------------------------------------------------------------------------------------- ours
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # written whole, then renamed: never a torn file
    try:
        save_file(out, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
    from .registry import build_textsam

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

"""The official base weights, loaded offline from local files (before LoRA is applied).

* Official SAM (``sam_vit_b_01ec64.pth``; MedSAM's ViT-B file has the same keys): a plain state dict of the
  ``Sam`` module (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``).
* BiomedCLIP folder: ``open_clip_config.json``, ``open_clip_pytorch_model.bin`` (or ``open_clip_model.safetensors``)
  with the CLIP state dict (we take its ``text.*`` part) and the tokenizer's ``vocab.txt``.

Imported by :mod:`.registry` (which builds the model from them); our own checkpoint format is :mod:`.checkpoint`.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..core.config import TextSamConfig
from .weights import CheckpointError, check_state_dict, torch_load_state_dict

__all__ = ["load_sam_checkpoint", "biomedclip_vocab", "load_biomedclip_text"]

_IGNORED_TEXT_KEYS = ("transformer.pooler.", "transformer.embeddings.position_ids")


# ---------------------------------------------------------------------------------------------- SAM
def load_sam_checkpoint(sam: nn.Module, path: str | Path, preset: str = "vit_b") -> None:
    """Load an official SAM/MedSAM state dict into a plain (not yet LoRA-wrapped) ``Sam``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SAM checkpoint not found: {path} (expected the official file, e.g. "
                              "sam_vit_b_01ec64.pth, or MedSAM's medsam_vit_b.pth, on local disk)")
    state = torch_load_state_dict(path)
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
        state = torch_load_state_dict(weights)
    text_state = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    text_state = {k: v for k, v in text_state.items() if not k.startswith(_IGNORED_TEXT_KEYS)}
    if not text_state:
        raise CheckpointError(f"{weights} has no 'text.*' tensors: is it a BiomedCLIP (open_clip) checkpoint?")
    check_state_dict(tower.state_dict(), text_state, file=weights,
                     what=f"the BiomedCLIP text tower of preset {cfg.preset!r}")
    tower.load_state_dict(text_state, strict=True)

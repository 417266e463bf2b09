"""Shared fixtures: tiny models and weight files in the official formats, made on the fly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from benchmarks.models import trained_like_tiny  # noqa: F401 - the tests' trained-like tiny model

# one thread: tiny models gain little from two, and a second thread that waits for a busy core makes every small
# op wait for a time slice (the presence training tests took 20x longer with 2 threads on a loaded 2-core machine)
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


@pytest.fixture
def tiny_model():
    from textsam_eus.model.registry import build_textsam

    torch.manual_seed(0)
    return build_textsam("tiny").eval()


def write_official_sam(path: Path, cfg, wrap: str | None = None) -> dict:
    """A SAM state dict in the official .pth format (what sam_vit_b_01ec64.pth holds) for ``cfg``'s sizes."""
    from textsam_eus.model.textsam import build_sam

    torch.manual_seed(1)
    sam = build_sam(cfg)
    for p in sam.parameters():  # make the weights recognisable
        torch.nn.init.normal_(p, std=0.02)
    state = sam.state_dict()
    torch.save({wrap: state} if wrap else state, path)
    return state


def write_biomedclip_folder(folder: Path, cfg) -> dict:
    """A BiomedCLIP-format folder (open_clip config, open_clip_pytorch_model.bin, vocab.txt) for ``cfg.text``."""
    from textsam_eus.model.text_branch import build_text_tower
    from textsam_eus.model.tokenizer import tiny_vocab_path

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(2)
    tower = build_text_tower(cfg.text)
    for p in tower.parameters():
        torch.nn.init.normal_(p, std=0.02)
    state = {f"text.{k}": v for k, v in tower.state_dict().items()}
    state["visual.trunk.patch_embed.proj.weight"] = torch.zeros(4, 3, 2, 2)  # the image tower is ignored
    state["logit_scale"] = torch.tensor(4.6)
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {"embed_dim": cfg.text.embed_dim,
                      "vision_cfg": {"timm_model_name": "vit_base_patch16_224"},
                      "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract",
                                   "hf_tokenizer_name": "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract",
                                   "hf_proj_type": cfg.text.proj_type,
                                   "hf_pooler_type": "cls_last_hidden_state_pooler",
                                   "context_length": cfg.text.context_length}},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }))
    (folder / "vocab.txt").write_text(tiny_vocab_path().read_text())
    return {k[5:]: v for k, v in state.items() if k.startswith("text.")}



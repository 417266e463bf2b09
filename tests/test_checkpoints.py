"""Weights: official SAM .pth, BiomedCLIP folder, our safetensors checkpoints, and their errors."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import write_biomedclip_folder, write_official_sam

from textsam_eus.model.checkpoint import (CheckpointError, load_checkpoint, read_checkpoint_meta,
                                          save_checkpoint)
from textsam_eus.model.lora import LoRAQKV
from textsam_eus.model.registry import build_textsam, get_config


@pytest.mark.parametrize("wrap", [None, "model"])
def test_official_sam_checkpoint_round_trip(tmp_path, wrap):
    cfg = get_config("tiny")
    state = write_official_sam(tmp_path / "sam_tiny.pth", cfg, wrap=wrap)
    model = build_textsam("tiny", sam_checkpoint=str(tmp_path / "sam_tiny.pth"))
    qkv = model.sam.image_encoder.blocks[0].attn.qkv
    assert isinstance(qkv, LoRAQKV)  # LoRA goes on after the official weights are in
    assert torch.equal(qkv.base.weight, state["image_encoder.blocks.0.attn.qkv.weight"])
    assert torch.equal(model.sam.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])
    assert torch.equal(model.sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
                       state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"])


def test_official_sam_checkpoint_errors(tmp_path):
    cfg = get_config("tiny")
    state = write_official_sam(tmp_path / "ok.pth", cfg)
    bad = dict(state)
    bad.pop("mask_decoder.iou_token.weight")
    bad["image_encoder.extra.weight"] = torch.zeros(1)
    bad["image_encoder.pos_embed"] = torch.zeros(1, 8, 8, 192)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        build_textsam("tiny", sam_checkpoint=str(tmp_path / "bad.pth"))
    msg = str(err.value)
    assert "bad.pth" in msg and "'tiny'" in msg
    assert "missing keys: mask_decoder.iou_token.weight" in msg
    assert "unexpected keys: image_encoder.extra.weight" in msg
    assert "image_encoder.pos_embed (1, 8, 8, 192) (expected (1, 16, 16, 192))" in msg
    with pytest.raises(CheckpointError, match="not found"):
        build_textsam("tiny", sam_checkpoint=str(tmp_path / "nope.pth"))


def test_torch_load_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(CheckpointError, match="cannot read"):
        build_textsam("tiny", sam_checkpoint=str(tmp_path / "evil.pth"))


def test_biomedclip_folder_round_trip_and_errors(tmp_path):
    cfg = get_config("tiny")
    text_state = write_biomedclip_folder(tmp_path / "biomedclip", cfg)
    model = build_textsam("tiny", biomedclip_dir=str(tmp_path / "biomedclip"))
    got = model.text.tower.state_dict()
    assert set(got) == set(text_state)
    assert all(torch.equal(got[k], text_state[k]) for k in got)
    (tmp_path / "biomedclip" / "open_clip_config.json").write_text('{"model_cfg": {"embed_dim": 512, "text_cfg": {}}}')
    with pytest.raises(CheckpointError, match="embed_dim=512 but preset 'tiny' expects 128"):
        build_textsam("tiny", biomedclip_dir=str(tmp_path / "biomedclip"))
    with pytest.raises(CheckpointError, match="open_clip_config.json is missing"):
        build_textsam("tiny", biomedclip_dir=str(tmp_path))


def _outputs(model):
    torch.manual_seed(5)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        return model(x, torch.tensor([[[30.0, 40.0]]]), torch.tensor([[1.0]]))


def test_full_checkpoint_round_trip(tmp_path, tiny_model):
    with torch.no_grad():
        for n, p in tiny_model.named_parameters():
            if "lora_B" in n or n == "text.ctx":
                p.normal_(std=0.05)
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors", extra={"epoch": 3})
    meta = read_checkpoint_meta(path)
    assert meta["contents"] == "full" and meta["extra"] == {"epoch": 3}
    loaded, extra = load_checkpoint(path)
    assert extra == {"epoch": 3}
    for a, b in zip(_outputs(tiny_model), _outputs(loaded.eval())):
        assert torch.equal(a, b)


def test_trainable_only_checkpoint_round_trip(tmp_path):
    cfg = get_config("tiny", finetune="lora")
    write_official_sam(tmp_path / "sam.pth", cfg)
    write_biomedclip_folder(tmp_path / "bclip", cfg)
    model = build_textsam(cfg, sam_checkpoint=str(tmp_path / "sam.pth"), biomedclip_dir=str(tmp_path / "bclip"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    path = save_checkpoint(model, tmp_path / "lora.safetensors")
    assert read_checkpoint_meta(path)["contents"] == "trainable"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert keys == set(model.trainable_state_dict())
    loaded, _ = load_checkpoint(path)
    for a, b in zip(_outputs(model.eval()), _outputs(loaded.eval())):
        assert torch.equal(a, b)


def test_our_checkpoint_errors(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "r4.safetensors")
    with pytest.raises(CheckpointError, match=r"wrong shapes: .*lora_A.*preset 'tiny'|r4.safetensors.*lora_rank=8"):
        load_checkpoint(path, lora_rank=8)
    (tmp_path / "junk.safetensors").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read .*junk.safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a TextSAM-EUS checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")

"""The fused-attention image encoder (model/attention.py) against segment-anything's attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textsam_eus.model.attention import encoder_attention, set_encoder_attention


def _encoder(size=128):
    from textsam_eus.model.registry import get_config
    from textsam_eus.model.textsam import build_sam

    torch.manual_seed(0)
    enc = build_sam(get_config("tiny", image_size=size)).image_encoder.eval()
    for b in enc.blocks:  # segment-anything zero-initialises the relative positions: make them matter
        torch.nn.init.normal_(b.attn.rel_pos_h, std=0.5)
        torch.nn.init.normal_(b.attn.rel_pos_w, std=0.5)
    return enc


@pytest.mark.slow
@pytest.mark.parametrize("size", [128, 256])
def test_sdpa_matches_segment_anything_attention_windowed_and_global(size):
    enc = _encoder(size)
    keys = list(enc.state_dict())
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        ref = enc(x)
        assert encoder_attention(enc) == "reference"
        set_encoder_attention(enc, "sdpa")
        assert encoder_attention(enc) == "sdpa"
        out = enc(x)
    assert list(enc.state_dict()) == keys  # same parameters: official checkpoints load unchanged
    assert (out - ref).abs().max().item() < 1e-4
    assert not torch.equal(out, ref)  # it really ran a different kernel path...
    set_encoder_attention(enc, "reference")
    with torch.inference_mode():
        assert torch.equal(enc(x), ref)  # ...and switching back is exact
    with pytest.raises(ValueError, match="choose one of"):
        set_encoder_attention(enc, "flash")


@pytest.mark.slow
def test_torch_engine_attention_switch_gives_the_same_masks():
    from textsam_eus.common.phantom import PhantomClip, PhantomConfig
    from textsam_eus.engines.torch_engine import TorchEngine

    frame = PhantomClip(1, 0, config=PhantomConfig(height=240, width=320))[0][0]
    ref = TorchEngine("demo", device="cpu", attention="reference")
    fast = TorchEngine("demo", device="cpu", attention="sdpa")
    assert ref.info()["attention"] == "reference" and fast.info()["attention"] == "sdpa"
    assert TorchEngine("demo", device="cpu").info()["attention"] == "reference"  # auto on the CPU
    a, b = ref.segment(frame), fast.segment(frame)
    assert a.mask.any()
    inter, union = np.logical_and(a.mask, b.mask).sum(), np.logical_or(a.mask, b.mask).sum()
    assert inter / union > 0.999 and abs(a.presence - b.presence) < 1e-3
    with pytest.raises(ValueError, match="attention"):
        TorchEngine("demo", device="cpu", attention="fast")


def test_auto_attention_is_sdpa_where_it_was_measured_faster():
    from textsam_eus.model.attention import auto_attention

    assert auto_attention("cuda", 256) == "sdpa" and auto_attention("cpu", 1024) == "sdpa"
    assert auto_attention("cpu", 256) == "reference" and auto_attention("cpu", 512) == "reference"


def test_stream_attention_flag_reaches_the_torch_engine(tmp_path):
    import json

    from textsam_eus.cli import main

    assert main(["stream", "--source", "phantom:2", "--out", str(tmp_path / "o"), "--engine", "torch",
                 "--attention", "sdpa", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["engine"]["attention"] == "sdpa"

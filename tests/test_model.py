"""The model foundation: parameter counts, LoRA, trainable set, deep prompts, refinement, configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textsam_eus.cli import main
from textsam_eus.core.config import ConfigError, TextSamConfig
from textsam_eus.model.lora import LoRALinear, LoRAQKV, has_lora
from textsam_eus.model.predictor import TextSamPredictor
from textsam_eus.model.refine import Segmenter, geometric_prompts
from textsam_eus.model.registry import build_textsam, get_config, prompt_text
from textsam_eus.model.textsam import DECODER_TRAINED_PARTS


@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    return build_textsam("vit_b")


@pytest.mark.slow
@pytest.mark.parametrize("rank,expected", [(16, 1_685_092), (4, 1_172_068), (1, 1_043_812)])
def test_vit_b_trainable_parameter_counts(rank, expected, capsys):
    assert main(["info", "--preset", "vit_b", "--lora-rank", str(rank), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["trainable_parameters"] == expected
    assert info["total_parameters"] > 200_000_000  # SAM ViT-B + PubMedBERT


@pytest.mark.slow
def test_vit_b_lora_targets_and_trainable_names(vit_b):
    sam = vit_b.sam
    assert all(isinstance(b.attn.qkv, LoRAQKV) for b in sam.image_encoder.blocks) and len(sam.image_encoder.blocks) == 12
    wrapped = [n for n, m in sam.mask_decoder.named_modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 14  # q_proj + v_proj of 7 attention modules
    assert all(n.endswith(("q_proj", "v_proj")) for n in wrapped)
    allowed = ("sam.image_encoder.blocks", "sam.mask_decoder.transformer", "text.ctx", "text.adapter") + tuple(
        f"sam.mask_decoder.{p}" for p in DECODER_TRAINED_PARTS)
    for name, p in vit_b.named_parameters():
        if p.requires_grad:
            assert name.startswith(allowed), name
            if name.startswith(("sam.image_encoder", "sam.mask_decoder.transformer")):
                assert ".lora_" in name, name
    assert vit_b.text.ctx.shape == (12, 4, 768)
    assert not any(p.requires_grad for p in vit_b.text.tower.parameters())


@pytest.mark.slow
def test_deep_prompts_replace_positions_at_all_12_places(vit_b):
    text = vit_b.text
    bert = text.tower.transformer
    seen = {}

    def grab(index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs.get("hidden_states", kwargs.get("inputs_embeds"))
            seen[index] = hidden.detach().clone()
        return hook

    handles = [bert.embeddings.register_forward_pre_hook(
        lambda m, a, k: seen.__setitem__(0, k["inputs_embeds"].detach().clone()), with_kwargs=True)]
    handles += [bert.encoder.layer[i].register_forward_pre_hook(grab(i), with_kwargs=True) for i in range(1, 12)]
    try:
        with torch.no_grad():
            base = text()
    finally:
        for h in handles:
            h.remove()
    for i in range(12):
        assert torch.equal(seen[i][0, 1:5], text.ctx[i]), f"prompt set {i} not at positions 1..4"
    assert base.shape == (1, 256)
    assert torch.allclose(base.norm(dim=-1), torch.ones(1))
    for i in range(12):  # changing any one set changes the token
        with torch.no_grad():
            saved = text.ctx[i].clone()
            text.ctx[i].add_(0.5 * torch.randn_like(saved))
            changed = text()
            text.ctx[i].copy_(saved)
        assert (changed - base).abs().max() > 1e-5, f"prompt set {i} has no effect"


def test_prompt_template_tokens():
    cfg = get_config("tiny")
    from textsam_eus.model.registry import build_tokenizer

    tokens = build_tokenizer(cfg).tokens(prompt_text(cfg))
    assert tokens == ["[CLS]", "x", "x", "x", "x", "tumor", ".", "[SEP]"]


@pytest.mark.slow
def test_lora_identity_at_init_and_merge_parity(tiny_model):
    torch.manual_seed(3)
    x = torch.randn(1, 3, 256, 256)
    coords = torch.tensor([[[100.0, 120.0], [60.0, 70.0], [150.0, 160.0]]])
    labels = torch.tensor([[1.0, 2.0, 3.0]])
    with torch.no_grad():
        out0 = tiny_model(x, coords, labels)
        # identity at init: B = 0, so removing the adapters changes nothing
        lin = torch.nn.Linear(16, 48)
        assert torch.equal(LoRAQKV(lin, 4)(torch.ones(2, 16)), lin(torch.ones(2, 16)))
        merged_init = build_textsam("tiny")
        merged_init.load_state_dict(tiny_model.state_dict())
        merged_init.merge_lora()
        assert (merged_init(x, coords, labels)[0] - out0[0]).abs().max() == 0
        # trained adapters: merge must match the unmerged model
        for n, p in tiny_model.named_parameters():
            if ".lora_B" in n:
                p.normal_(std=0.05)
        unmerged = tiny_model(x, coords, labels)
        assert (unmerged[0] - out0[0]).abs().max() > 1e-3  # the adapters now do something
        tiny_model.merge_lora()
        assert not has_lora(tiny_model)
        assert all(type(b.attn.qkv) is torch.nn.Linear for b in tiny_model.sam.image_encoder.blocks)
        merged = tiny_model(x, coords, labels)
    assert (merged[0] - unmerged[0]).abs().max() < 1e-5
    assert (merged[1] - unmerged[1]).abs().max() < 1e-5


@pytest.mark.slow
def test_gradients_only_where_the_paper_trains():
    torch.manual_seed(0)
    model = build_textsam("tiny", finetune="lora").train()
    x = torch.randn(1, 3, 256, 256)
    masks, iou = model(x, torch.tensor([[[50.0, 60.0]]]), torch.tensor([[1.0]]))
    (masks.mean() + iou.mean()).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad <= trainable
    for n in trainable:
        assert (".lora_" in n or n.startswith(("text.ctx", "text.adapter"))
                or any(n.startswith(f"sam.mask_decoder.{p}") for p in DECODER_TRAINED_PARTS)), n
    assert "text.ctx" in with_grad and any(n.startswith("text.adapter") for n in with_grad)
    assert any("image_encoder" in n and "lora_B" in n for n in with_grad)
    assert not any("base." in n or "text.tower" in n or "prompt_encoder" in n for n in with_grad)
    assert not model.text.tower.training  # the frozen tower runs in eval mode during training


def test_full_finetune_trains_sam_but_not_the_text_tower(tiny_model):
    names = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert any(n.startswith("sam.image_encoder.patch_embed") for n in names)
    assert not any(n.startswith("text.tower") for n in names)


@pytest.mark.parametrize("field,value", [
    ("lora_rank", 0), ("n_ctx", 0), ("prompt_depth", 13), ("image_size", 1000), ("finetune", "qlora"),
    ("refine_iterations", -1), ("patch_size", "16"), ("encoder_global_attn_indexes", (2, 12)),
    ("class_name", " "), ("lora_alpha", -1.0),
])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        get_config("vit_b", **{field: value})
    assert field in str(err.value) and repr(value) in str(err.value)


def test_unknown_preset_and_field_list_alternatives():
    with pytest.raises(ConfigError, match="available presets: .*tiny.*vit_b"):
        get_config("vit_h")
    with pytest.raises(ConfigError, match="unknown config field 'lora_rnak'"):
        get_config("tiny", lora_rnak=4)
    with pytest.raises(ConfigError, match="text.num_heads"):
        get_config("tiny", text={"num_heads": 3})


def test_config_json_round_trip():
    cfg = get_config("tiny", lora_rank=8)
    assert TextSamConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ---------------------------------------------------------------------------------------------- refinement
class FakeBackend:
    """Decoder that returns a fixed rectangle for the text-only pass (or nothing) and records its prompts."""

    def __init__(self, rect=(40, 60, 100, 140), empty=False):
        self.calls, self.encodes, self.rect, self.empty = [], 0, rect, empty

    def encode(self, x):
        self.encodes += 1
        return torch.zeros(1)

    def decode(self, emb, coords, labels):
        self.calls.append(None if coords is None else (coords.clone(), labels.clone()))
        low = torch.full((1, 1, 64, 64), -10.0)
        if not self.empty:
            x0, y0, x1, y1 = (v // 4 for v in self.rect)  # 256 input -> 64 low-res
            low[..., y0:y1, x0:x1] = 10.0
        return low, torch.tensor([[0.9]])


def test_refinement_adds_box_and_centroid_and_encodes_once():
    fake = FakeBackend()
    seg = Segmenter(fake.encode, fake.decode, image_size=256, pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1))
    frame = np.zeros((128, 128, 3), np.uint8)  # resized x2 into the 256 input frame
    res = seg.segment(frame)
    assert fake.encodes == 1 and len(fake.calls) == 3 and res.passes == 3
    assert fake.calls[0] is None  # text-only pass sends no geometric prompt
    coords, labels = fake.calls[1]
    assert labels.tolist() == [[1.0, 2.0, 3.0]]
    (cx, cy), (bx0, by0), (bx1, by1) = coords[0].tolist()
    assert (bx0, by0) == pytest.approx((40, 60), abs=2) and (bx1, by1) == pytest.approx((99, 139), abs=2)
    assert (cx, cy) == pytest.approx((69.5, 99.5), abs=2)
    assert res.mask.shape == (128, 128) and res.mask[50, 35] and not res.mask[10, 10]
    assert res.box is not None and res.box[0] == pytest.approx(20, abs=2)  # frame pixels (input / 2)


def test_refinement_survives_empty_mask():
    fake = FakeBackend(empty=True)
    seg = Segmenter(fake.encode, fake.decode, image_size=256, pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1))
    res = seg.segment(np.zeros((100, 120), np.uint8))
    assert res.passes == 1 and len(fake.calls) == 1 and not res.mask.any() and res.box is None


@pytest.mark.parametrize("mode,labels", [("box", [2, 3]), ("point", [1]), ("box+centroid", [1, 2, 3]),
                                         ("box+5points", [1, 1, 1, 1, 1, 2, 3])])
def test_refine_prompt_ablations(mode, labels):
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[5:10, 6:12] = True
    coords, labs = geometric_prompts(torch.tensor([6.0, 5, 11, 9]), torch.tensor([8.5, 7.0]), mode, mask)
    assert labs[0].tolist() == labels and coords.shape == (1, len(labels), 2)
    assert geometric_prompts(torch.zeros(4), torch.zeros(2), "none") is None


@pytest.mark.slow
def test_predictor_on_tiny_model_is_deterministic_and_uses_manual_prompts(tiny_model):
    pred = TextSamPredictor(tiny_model)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (180, 240, 3), dtype=np.uint8)
    a, b = pred.segment(frame), pred.segment(frame)
    assert np.array_equal(a.mask, b.mask) and a.iou == b.iou and a.mask.shape == (180, 240)
    manual = pred.segment(frame, box=np.array([10, 20, 100, 120]), points=np.array([[50, 60]]), iterations=0)
    coords, labels = manual.prompts[0]
    assert labels.tolist() == [[1, 2, 3]]
    assert coords[0, 0].tolist() == pytest.approx([50 * 256 / 240, 60 * 256 / 240], rel=1e-4)
    calls = []
    encode = tiny_model.encode_image
    tiny_model.encode_image = lambda x: calls.append(1) or encode(x)
    pred.set_image(frame)
    assert np.array_equal(pred.predict().mask, a.mask)
    pred.predict(box=np.array([10, 20, 100, 120]), iterations=0)
    assert len(calls) == 1  # encode once, query many times


@pytest.mark.parametrize("frame,ok", [
    (np.zeros((64, 64), np.uint8), True), (np.zeros((64, 64, 1), np.uint8), True),
    (np.zeros((64, 64, 4), np.uint8), True), (np.zeros((64, 64, 3), np.float32), False),
    (np.zeros((64, 64, 2), np.uint8), False), (np.zeros((4, 4, 3), np.uint8), False),
])
def test_frame_formats(frame, ok):
    from textsam_eus.model.transforms import FrameError, to_rgb

    if ok:
        assert to_rgb(frame).shape == (64, 64, 3)
    else:
        with pytest.raises(FrameError):
            to_rgb(frame)


def test_bgr_order_is_swapped():
    from textsam_eus.model.transforms import to_rgb

    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    assert to_rgb(bgr, "bgr")[0, 0].tolist() == [0, 0, 255]

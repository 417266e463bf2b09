"""The OpenCV/NumPy pre-/post-processing of the ONNX Runtime CPU path against the torch one (model/transforms.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_data
from torch.utils._python_dispatch import TorchDispatchMode

from textsam_eus.common.phantom import PhantomConfig, make_phantom_dataset
from textsam_eus.engines import create_engine
from textsam_eus.engines.cpu_prepost import NumpyPrePost, mask_box_centroid, select_prepost
from textsam_eus.export.onnx_export import export_bundle
from textsam_eus.model import transforms as T
from textsam_eus.model.refine import REFINE_PROMPTS, TorchPrePost
from textsam_eus.model.registry import build_textsam

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = build_textsam("tiny").eval()
    with torch.no_grad():  # non-trivial LoRA/prompt weights, as after training
        for n, p in model.named_parameters():
            if "lora_B" in n or n.startswith("text."):
                p.add_(0.05 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("bundle")
    export_bundle(model, out)
    return out


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


@pytest.mark.parametrize("hw", [(457, 711), (240, 320), (100, 130), (256, 256), (600, 800), (300, 200)])
def test_preprocess_is_bit_identical_to_transforms(hw):
    frame = np.random.default_rng(hw[0]).integers(0, 255, hw + (3,), dtype=np.uint8)
    x_np, r_np = NumpyPrePost(256, MEAN, STD).preprocess(frame)
    x_t, r_t = T.preprocess(frame, 256, MEAN, STD)
    assert r_np == r_t and x_np.dtype == np.float32 and x_np.shape == (1, 3, 256, 256)
    assert np.array_equal(x_np, x_t.numpy())


@pytest.mark.parametrize("hw", [(457, 711), (240, 320), (100, 130), (256, 256)])
def test_upsampling_matches_torch_bilinear(hw):
    rng = np.random.default_rng(1)
    npp, tpp = NumpyPrePost(256, MEAN, STD), TorchPrePost(256, MEAN, STD)
    resized = T.resized_shape(*hw, 256)
    for _ in range(3):
        low = (3 * rng.standard_normal((1, 1, 64, 64))).astype(np.float32)
        li_np, li_t = npp.lowres_to_input(low, resized), tpp.lowres_to_input(torch.from_numpy(low), resized)
        assert li_np.shape == tuple(li_t.shape) == resized
        assert np.abs(li_np - li_t.numpy()).max() < 1e-5
        m_np, m_t = npp.frame_mask(li_np, hw, 0.0), tpp.frame_mask(li_t, hw, 0.0)
        assert m_np.shape == m_t.shape == hw and m_np.dtype == bool
        # the weights differ in float rounding only: a pixel flips only where a logit is ~1e-4 from the threshold
        assert (m_np != m_t).sum() <= max(2, m_np.size // 100000)


@pytest.mark.parametrize("mode", REFINE_PROMPTS)
def test_refine_prompts_match_torch(mode):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((165, 256)).astype(np.float32) - 1.0
    got = NumpyPrePost(256, MEAN, STD).refine_prompt(logits, 0.0, mode, 3)
    want = TorchPrePost(256, MEAN, STD).refine_prompt(torch.from_numpy(logits), 0.0, mode, 3)
    if want is None:
        assert got is None
        return
    assert got[0].dtype == np.float32 and got[1].dtype == np.float32
    assert np.array_equal(got[1], want[1].numpy())
    np.testing.assert_allclose(got[0], want[0].numpy(), rtol=0, atol=1e-4)


def test_box_and_centroid():
    m = np.zeros((20, 30), bool)
    m[5:10, 6:12] = True
    m[12, 20] = True
    box, cen = mask_box_centroid(m)
    ys, xs = np.nonzero(m)
    assert box.tolist() == [6, 5, 20, 12] and np.allclose(cen, [xs.mean(), ys.mean()])
    assert mask_box_centroid(np.zeros((4, 4), bool)) is None


@pytest.mark.slow
def test_one_place_picks_the_path(bundle_dir):
    assert create_engine("onnxruntime", bundle=bundle_dir).prepost == "numpy"
    assert create_engine("onnxruntime", bundle=bundle_dir, prepost="torch").prepost == "torch"
    assert create_engine("torch", model=build_textsam("tiny").eval(), device="cpu").prepost == "torch"
    assert select_prepost("auto", host_arrays=True, device="cuda", image_size=256, pixel_mean=MEAN,
                          pixel_std=STD).name == "torch"
    with pytest.raises(ValueError, match="prepost='numpy' needs a backend that takes host arrays"):
        select_prepost("numpy", host_arrays=False, device="cpu", image_size=256, pixel_mean=MEAN, pixel_std=STD)
    with pytest.raises(ValueError, match="prepost='fast' is invalid"):
        create_engine("onnxruntime", bundle=bundle_dir, prepost="fast")


def _phantoms(n=4):
    return [img for img, _ in make_phantom_dataset(n, seed=5, config=PhantomConfig(height=457, width=711))]


def _compare(frames, bundle_dir):
    fast = create_engine("onnxruntime", bundle=bundle_dir)
    ref = create_engine("onnxruntime", bundle=bundle_dir, prepost="torch")
    ious = []
    for frame in frames:
        a, b = fast.segment(frame), ref.segment(frame)
        assert a.mask.shape == b.mask.shape == frame.shape[:2] and a.mask.dtype == b.mask.dtype == bool
        assert a.passes == b.passes and a.iou == pytest.approx(b.iou, abs=1e-4)
        assert a.presence == pytest.approx(b.presence, abs=1e-4)
        assert set(a.timings) == set(b.timings)
        assert (a.box is None) == (b.box is None)
        if a.box is not None:
            np.testing.assert_allclose(a.box, b.box, atol=1.0)
            np.testing.assert_allclose(a.centroid, b.centroid, atol=0.5)
        assert len(a.prompts) == len(b.prompts)
        for pa, pb in zip(a.prompts[1:], b.prompts[1:]):
            np.testing.assert_allclose(pa[0], pb[0], atol=1e-2)
            assert np.array_equal(pa[1], pb[1])
        ious.append(_iou(a.mask, b.mask))
    return ious


@pytest.mark.slow
def test_numpy_path_masks_equal_torch_path_on_phantom_frames(bundle_dir):
    frames = _phantoms() + [np.random.default_rng(3).integers(0, 255, (180, 240), dtype=np.uint8)]
    assert min(_compare(frames, bundle_dir)) >= 0.999


def test_numpy_path_masks_equal_torch_path_on_real_eus_frames(bundle_dir):
    clips = shared_data("eus_clips")
    from textsam_eus.stream.roi import ROI
    from textsam_eus.stream.sources import VideoFileSource

    roi, frames = ROI.preset("eus800x600"), []
    with VideoFileSource(clips / "cancer_v1.mp4") as src:
        for i, frame in enumerate(src):
            if i % 20 == 0:
                frames.append(roi.crop(frame.image))
            if len(frames) == 6:
                break
    assert min(_compare(frames, bundle_dir)) >= 0.999


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_onnxruntime_cpu_runs_no_torch_op_per_frame(bundle_dir):
    frame = _phantoms(1)[0]
    for prepost, expect_ops in (("auto", False), ("torch", True)):  # the torch path shows the check can fail
        engine = create_engine("onnxruntime", bundle=bundle_dir, prepost=prepost)
        engine.segment(frame)  # warm-up
        with _Ops() as rec:
            res = engine.segment(frame, box=np.array([100, 80, 400, 300]), points=np.array([[250, 190]]))
        assert res.passes >= 1
        assert bool(rec.ops) == expect_ops, rec.ops[:5]


@pytest.mark.parametrize("resize", ["area", "bilinear"])
def test_numpy_preprocess_follows_the_weights_resize_rule(resize):
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (457, 711, 3), dtype=np.uint8)
    pp = select_prepost("auto", host_arrays=True, device="cpu", image_size=256, pixel_mean=(123.7, 116.3, 103.5),
                        pixel_std=(58.4, 57.1, 57.4), resize=resize)
    assert pp.name == "numpy" and pp.resize == resize
    x, hw = pp.preprocess(frame)
    ref, ref_hw = T.preprocess(frame, 256, (123.7, 116.3, 103.5), (58.4, 57.1, 57.4), resize=resize)
    assert hw == ref_hw and np.array_equal(x, ref.numpy())

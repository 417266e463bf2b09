"""Export bundles and the engines behind one interface: parity, bad bundles, bad frames, missing backends."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from conftest import trained_like_tiny
from conftest import shared_data

from textsam_eus.cli import main
from textsam_eus.common.phantom import PhantomConfig, make_phantom_dataset
from textsam_eus.engines import available_engines, create_engine, fastest_engine
from textsam_eus.export.errors import ExportError
from textsam_eus.export.onnx_export import _logit_diff, _mask_iou, check_parity, export_bundle
from textsam_eus.core.hashing import file_sha256 as sha256
from textsam_eus.model.bundle import BundleError, PlanMismatchError, read_bundle
from textsam_eus.model.checkpoint import save_checkpoint
from textsam_eus.model.transforms import FrameError


@pytest.fixture(scope="module")
def model():
    return trained_like_tiny(0)


@pytest.fixture(scope="module")
def bundle_dir(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    export_bundle(model, out, fp16=True)
    return out


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_bundle_contents(bundle_dir, model):
    b = read_bundle(bundle_dir)
    assert set(b.files) == {"encoder", "decoder_text", "decoder_refine", "encoder_fp16", "decoder_text_fp16",
                            "decoder_refine_fp16"}
    assert set(b.hashes) == set(b.files.values())
    assert b.image_size == 256 and b.embedding_shape == [1, 128, 16, 16] and b.lowres_size == 64
    token = model.deployable().cached_prompt
    assert np.allclose(np.array(b.prompt_tokens), token.numpy(), atol=1e-7)
    assert {"torch", "onnx", "onnxruntime", "opset"} <= set(b.versions)
    assert b.source["parity"]["max_abs_logit_diff"] <= 1e-3 and b.source["parity"]["min_mask_iou"] >= 0.99


def test_graphs_see_merged_plain_layers(bundle_dir):
    enc = onnx.load(str(bundle_dir / "encoder.onnx"))
    names = [i.name for i in enc.graph.initializer] + [n.name for n in enc.graph.node]
    assert not any("lora" in n.lower() for n in names)
    ref = onnx.load(str(bundle_dir / "decoder_refine.onnx"))
    assert [i.name for i in ref.graph.input] == ["image_embeddings", "text_tokens", "point_coords", "point_labels"]
    text = onnx.load(str(bundle_dir / "decoder_text.onnx"))
    assert [i.name for i in text.graph.input] == ["image_embeddings", "text_tokens"]  # no padding point


def test_fp16_graph_keeps_layernorm_and_softmax_fp32(bundle_dir):
    g = onnx.load(str(bundle_dir / "encoder_fp16.onnx")).graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    m = onnx.shape_inference.infer_shapes(onnx.load(str(bundle_dir / "encoder_fp16.onnx")))
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in m.graph.value_info})
    norms = [n for n in m.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert norms
    for n in norms:
        assert types.get(n.input[0]) == onnx.TensorProto.FLOAT, n.name
    assert any(t == onnx.TensorProto.FLOAT16 for t in types.values())


def _frames(n=3):
    return [img for img, _ in make_phantom_dataset(n, seed=7, config=PhantomConfig(height=240, width=320))]


@pytest.mark.slow
def test_torch_and_onnxruntime_engines_agree_on_synthetic_frames(model, bundle_dir):
    te = create_engine("torch", model=model, device="cpu")
    oe = create_engine("onnxruntime", bundle=bundle_dir)
    for frame in _frames():
        a, b = te.segment(frame), oe.segment(frame)
        assert a.mask.shape == b.mask.shape == frame.shape[:2]
        assert _iou(a.mask, b.mask) >= 0.99 and a.passes == b.passes
        assert abs(a.iou - b.iou) < 1e-3
        assert {"preprocess", "encode", "decode_0", "postprocess", "total"} <= set(b.timings)


def test_engines_agree_on_real_eus_frames(model, bundle_dir):
    clips = shared_data("eus_clips")
    from textsam_eus.stream.roi import ROI
    from textsam_eus.stream.sources import VideoFileSource

    te = create_engine("torch", model=model, device="cpu")
    oe = create_engine("onnxruntime", bundle=bundle_dir)
    roi = ROI.preset("eus800x600")
    with VideoFileSource(clips / "cancer_v1.mp4") as src:
        for i, frame in enumerate(src):
            if i % 20:
                continue
            crop = roi.crop(frame.image)
            assert _iou(te.segment(crop).mask, oe.segment(crop).mask) >= 0.99


@pytest.mark.slow
def test_parity_check_fails_loudly_on_a_wrong_graph(model, bundle_dir):
    with pytest.raises(ExportError, match="disagrees with torch"):
        check_parity(trained_like_tiny(1), bundle_dir, _frames(1))


def test_bundle_hash_and_version_errors(bundle_dir, tmp_path):
    bad = tmp_path / "b"
    shutil.copytree(bundle_dir, bad)
    data = bytearray((bad / "decoder_text.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bad / "decoder_text.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decoder_text.onnx does not match bundle.json"):
        create_engine("onnxruntime", bundle=bad)
    shutil.rmtree(bad)
    shutil.copytree(bundle_dir, bad)
    meta = json.loads((bad / "bundle.json").read_text())
    meta["versions"]["opset"] = "999"
    (bad / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="opset 999"):
        create_engine("onnxruntime", bundle=bad)
    meta["version"] = 99
    (bad / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="bundle version 99"):
        read_bundle(bad)
    with pytest.raises(BundleError, match="bundle.json is missing"):
        read_bundle(tmp_path)
    if available_engines()["tensorrt"][0]:
        from textsam_eus.engines.trt_engine import TrtEngine

        with pytest.raises(BundleError, match="no TensorRT plans"):
            TrtEngine(bundle_dir)


@pytest.mark.parametrize("damage", [
    pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
    pytest.param(lambda data: b"\x00\xffnot an onnx graph" * 64, id="garbage"),
    pytest.param(lambda data: b"", id="empty"),
])
def test_broken_graph_file_is_a_bundle_error(bundle_dir, tmp_path, damage):
    bad = tmp_path / "b"
    shutil.copytree(bundle_dir, bad)
    graph = bad / "decoder_text.onnx"
    graph.write_bytes(damage(graph.read_bytes()))
    meta = json.loads((bad / "bundle.json").read_text())
    meta["hashes"]["decoder_text.onnx"] = sha256(graph)  # the hash check passes: ONNX Runtime meets the file
    (bad / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"cannot load .*decoder_text.onnx.*re-export the bundle") as err:
        create_engine("onnxruntime", bundle=bad)
    assert "\n" not in str(err.value)


def _stale_bundle(bundle_dir, tmp_path):
    """A folder holding a valid earlier bundle, which a failed export into it must not leave usable."""
    out = tmp_path / "out"
    shutil.copytree(bundle_dir, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("param", [
    "sam.mask_decoder.output_upscaling.0.bias",  # NaN mask logits (and IoU)
    "sam.mask_decoder.iou_prediction_head.layers.2.bias",  # finite masks, NaN IoU predictions only
])
def test_export_refuses_a_model_with_non_finite_outputs(bundle_dir, tmp_path, param):
    model = trained_like_tiny(0)
    with torch.no_grad():
        model.get_parameter(param).fill_(float("nan"))
    out = _stale_bundle(bundle_dir, tmp_path)
    with pytest.raises(ExportError, match=r"non-finite outputs \(NaN/Inf\).*check the checkpoint/training"):
        export_bundle(model, out)
    assert not (out / "bundle.json").exists()
    with pytest.raises(BundleError, match="bundle.json is missing"):
        read_bundle(out)


def test_export_refuses_a_non_finite_prompt_token(bundle_dir, tmp_path):
    model = trained_like_tiny(0)
    with torch.no_grad():
        model.get_parameter("text.ctx")[0, 0, 0] = float("inf")
    out = _stale_bundle(bundle_dir, tmp_path)
    for verify in (True, False):
        with pytest.raises(ExportError, match=r"non-finite outputs \(NaN/Inf\): the prompt token"):
            export_bundle(model, out, verify=verify)
        assert not (out / "bundle.json").exists()


def test_parity_numbers_never_pass_nan():
    nan, zeros = np.full((1, 1, 4, 4), np.nan, np.float32), np.zeros((1, 1, 4, 4), np.float32)
    assert _logit_diff(nan, zeros) == np.inf and _logit_diff(zeros, nan) == np.inf
    assert _mask_iou(nan, nan, 0.0) == 0.0 and _mask_iou(zeros, zeros, 0.0) == 1.0
    assert _logit_diff(zeros, zeros + 1e-4) == pytest.approx(1e-4)


@pytest.mark.parametrize("make", [
    lambda f: f[..., 0],  # grayscale
    lambda f: np.ascontiguousarray(f[..., ::-1]),  # BGR given as such
    lambda f: np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]),  # RGBA
])
def test_frame_formats_accepted(bundle_dir, make):
    oe = create_engine("onnxruntime", bundle=bundle_dir)
    frame = _frames(1)[0]
    ref = oe.segment(frame)
    out = oe.segment(make(frame), color_order="bgr" if make(frame).shape[-1:] == (3,) else "rgb")
    assert out.mask.shape == frame.shape[:2]
    if make(frame).ndim == 3 and make(frame).shape[2] == 4:
        assert np.array_equal(out.mask, ref.mask)


@pytest.mark.parametrize("frame,match", [
    (np.full((64, 64, 3), np.nan, np.float32), "uint8"),
    (np.zeros((64, 64, 5), np.uint8), "shape"),
    (np.zeros((64,), np.uint8), "shape"),
    ("not an image", "numpy"),
])
def test_bad_frames_are_clear_errors(bundle_dir, frame, match):
    oe = create_engine("onnxruntime", bundle=bundle_dir)
    with pytest.raises(FrameError, match=match):
        oe.segment(frame)


def test_create_engine_lists_backends():
    with pytest.raises(ValueError, match=r"unknown engine 'tflite'.*torch \(available\).*onnxruntime"):
        create_engine("tflite")
    if not available_engines()["tensorrt"][0]:
        with pytest.raises(RuntimeError, match="tensorrt.*not available.*Engines: torch"):
            create_engine("tensorrt", bundle="x")
        assert fastest_engine() in ("onnxruntime", "torch")


def test_tensorrt_glue_without_tensorrt(tmp_path):
    from textsam_eus.export.tensorrt_build import TensorRTUnavailable, check_tag
    from textsam_eus.model.bundle import check_plan_tag
    from textsam_eus.core.imports import is_tensorrt_available, require_tensorrt

    tag = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt": "10.9.0"}
    here = {"gpu": "NVIDIA L4", "compute_capability": "8.9", "tensorrt": "10.9.0"}
    with pytest.raises(PlanMismatchError, match="built for another GPU.*gpu: plan 'NVIDIA H100 80GB HBM3', here 'NVIDIA L4'"):
        check_tag("p.plan", tag, here)
    with pytest.raises(BundleError, match="rebuild them here"):
        check_plan_tag("p.plan", tag, {**tag, "tensorrt": "11.0"})
    check_tag("p.plan", tag, dict(tag))  # same machine: fine
    if not is_tensorrt_available():
        with pytest.raises(TensorRTUnavailable, match="pip install 'textsam-eus\\[trt\\]'"):
            require_tensorrt()


@pytest.mark.slow
def test_export_cli(tmp_path, model):
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "bundle")]) == 0
    assert read_bundle(tmp_path / "bundle").source["checkpoint"].endswith("m.safetensors")
    from textsam_eus.core.imports import is_tensorrt_available

    if not is_tensorrt_available():
        assert main(["export", "--bundle", str(tmp_path / "bundle"), "--tensorrt"]) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_engines_match_cpu(model):
    cpu = create_engine("torch", model=model, device="cpu")
    for kw in ({}, {"cuda_graphs": True}, {"precision": "fp16"}):
        gpu = create_engine("torch", model=model, device="cuda", **kw)
        for frame in _frames(2):
            assert _iou(cpu.segment(frame).mask, gpu.segment(frame).mask) >= 0.98

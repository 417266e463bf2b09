"""int8 CPU graphs: quantized encoder in the bundle, its recorded parity, and the refusal that leaves a bundle alone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import trained_like_tiny

from textsam_eus.cli import main
from textsam_eus.engines import create_engine
from textsam_eus.export import quantize
from textsam_eus.export.onnx_export import ExportError, export_bundle
from textsam_eus.model.bundle import BundleError, read_bundle
from textsam_eus.model.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def model():
    return trained_like_tiny(0)


@pytest.fixture(scope="module")
def fp32_bundle(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32")
    export_bundle(model, out)
    return out


@pytest.fixture(scope="module")
def int8_bundle(fp32_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "b"
    shutil.copytree(fp32_bundle, out)
    quantize.add_int8(out)
    return out


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_int8_bundle_records_parity_and_runs(int8_bundle):
    b = read_bundle(int8_bundle)
    assert b.files["encoder_int8"] == "encoder_int8.onnx" and "encoder_int8.onnx" in b.hashes
    par = b.int8["parity"]
    assert par["frames"] == 6 and par["frames_source"].startswith("synthetic")
    assert 0.98 <= par["mean_mask_iou"] <= 1.0 and 0.0 <= par["min_mask_iou"] <= par["mean_mask_iou"]
    assert b.int8["roles"] == ["encoder"] and "quantize_dynamic" in b.int8["method"]
    assert (int8_bundle / "encoder_int8.onnx").stat().st_size < (int8_bundle / "encoder.onnx").stat().st_size
    assert not list(int8_bundle.glob(".int8-*"))
    e8 = create_engine("onnxruntime", bundle=int8_bundle, precision="int8")
    e32 = create_engine("onnxruntime", bundle=int8_bundle)
    assert e8.info()["int8_parity"] == par
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    a, r = e8.segment(frame), e32.segment(frame)
    assert a.mask.shape == r.mask.shape == (240, 320) and a.passes >= 1
    emb8 = e8.encode(e8.segmenter.prepost.preprocess(frame)[0])
    emb32 = e32.encode(e32.segmenter.prepost.preprocess(frame)[0])
    assert not np.array_equal(emb8, emb32)  # the int8 graph really runs
    assert np.abs(emb8 - emb32).max() < 0.2 * np.abs(emb32).max()


def test_int8_needs_its_graphs_and_the_cpu(fp32_bundle, int8_bundle):
    with pytest.raises(BundleError, match="has no int8 graphs; add them with 'textsam-eus export --bundle"):
        create_engine("onnxruntime", bundle=fp32_bundle, precision="int8")
    with pytest.raises(ValueError, match="int8 is for the CPU execution provider"):
        create_engine("onnxruntime", bundle=int8_bundle, precision="int8", device="cuda")


def _low_parity(bundle, paths, frames):
    return {"mean_mask_iou": 0.5, "min_mask_iou": 0.2, "frames": len(frames)}


def test_low_parity_is_refused_and_the_bundle_is_left_alone(fp32_bundle, tmp_path, monkeypatch):
    out = tmp_path / "b"
    shutil.copytree(fp32_bundle, out)
    before = _snapshot(out)
    monkeypatch.setattr(quantize, "int8_parity", _low_parity)
    with pytest.raises(ExportError, match=r"int8 refused .*mean mask IoU int8 vs fp32 0\.5000 .* below 0\.98; "
                                          r"the bundle was left unchanged"):
        quantize.add_int8(out)
    assert _snapshot(out) == before
    read_bundle(out)


def test_export_cli_int8(model, fp32_bundle, tmp_path, monkeypatch, capsys):
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    out = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, out)  # an existing bundle that a refused export must not touch
    before = _snapshot(out)
    real = quantize.int8_parity
    monkeypatch.setattr(quantize, "int8_parity", _low_parity)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--int8", "--no-verify"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int8 refused" in err[0]
    assert _snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "m.safetensors"]
    assert main(["export", "--bundle", str(out), "--int8"]) == 1 and _snapshot(out) == before
    monkeypatch.setattr(quantize, "int8_parity", real)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--int8", "--no-verify"]) == 0
    b = read_bundle(out)
    assert "encoder_int8" in b.files and b.int8["parity"]["mean_mask_iou"] >= 0.98
    assert b.source["checkpoint"].endswith("m.safetensors")
    src = b.int8["parity"]["frames_source"]
    assert "real EUS frames" in src or "phantom frames" in src
    assert "int8 vs fp32" in capsys.readouterr().out

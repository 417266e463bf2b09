"""int8 CPU graphs: quantized encoder in the bundle, its recorded parity, and the refusal that leaves a bundle alone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import trained_like_tiny

from textsam_eus.cli import main
from textsam_eus.engines import create_engine
from textsam_eus.export import quantize
from textsam_eus.export.errors import ExportError
from textsam_eus.export.onnx_export import export_bundle
from textsam_eus.model.bundle import BundleError, read_bundle
from textsam_eus.model.bundle import write_bundle
from textsam_eus.model.checkpoint import save_checkpoint
from textsam_eus.model.cpu_features import cpu_features, int8_portability_problem, int8_saturates


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
    """int8 graphs whatever their parity on this CPU (bar 0): what is recorded and what runs is tested here; the
    refusal below the bar is tested with a parity of known value, so no test depends on this CPU's int8 kernels."""
    out = tmp_path_factory.mktemp("int8") / "b"
    shutil.copytree(fp32_bundle, out)
    quantize.add_int8(out, min_mean_iou=0.0)
    return out


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_int8_bundle_records_parity_and_runs(int8_bundle):
    b = read_bundle(int8_bundle)
    assert b.files["encoder_int8"] == "encoder_int8.onnx" and "encoder_int8.onnx" in b.hashes
    par = b.int8["parity"]
    assert par["frames"] == 6 and par["frames_source"] == "6 synthetic frames (export.parity_frames)"
    assert quantize.INT8_MIN_MASK_FRAMES <= par["frames_with_mask"] <= par["frames_compared"] <= par["frames"]
    assert 0.0 <= par["min_mask_iou"] <= par["mean_mask_iou"] <= 1.0 and par["max_presence_diff"] >= 0.0
    assert b.int8["roles"] == ["encoder"] and "quantize_dynamic" in b.int8["method"]
    assert b.int8["settings"] == quantize.INT8_SETTINGS and b.int8["settings"]["reduce_range"] is True
    here = cpu_features()
    assert {k: b.int8["measured_on"][k] for k in here} == here and b.int8["measured_on"]["onnxruntime"]
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


def test_int8_weights_use_seven_bits_so_no_cpu_saturates(int8_bundle):
    """The setting's promise, checked on the graph itself (not on this CPU's results): every quantized weight is
    within 7 bits, where ONNX Runtime's U8S8 pair sums cannot overflow int16 on any x86-64 CPU."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(int8_bundle / "encoder_int8.onnx")).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 4 and sum(w.size for w in weights) > 10_000
    assert all(w.min() >= -64 and w.max() <= 64 for w in weights)
    assert 2 * 255 * 64 < 2 ** 15 - 1 and not int8_saturates(read_bundle(int8_bundle).int8["settings"])


ZEN3 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n"
ICELAKE = "model name\t: Intel Xeon 8375C\nflags\t\t: fpu avx avx2 avx512f avx512bw avx512_vnni\n"


def test_cpu_features_read_the_int8_flags(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    zen, ice = cpu_features.__wrapped__(ZEN3), cpu_features.__wrapped__(ICELAKE)
    assert zen["flags"] == ["avx2"] and zen["vnni"] is False and zen["model"] == "AMD EPYC 7B13"
    assert ice["vnni"] is True and "avx512_vnni" in ice["flags"]
    assert cpu_features.__wrapped__("")["vnni"] is None  # no flags known: not assumed to have VNNI


FULL_RANGE = {"weight_type": "QInt8", "reduce_range": False, "per_channel": False}
NO_VNNI = {"x86": True, "vnni": False, "flags": ["avx2"], "model": "AMD EPYC"}
VNNI = {"x86": True, "vnni": True, "flags": ["avx2", "avx512_vnni"], "model": "Xeon"}


@pytest.mark.parametrize("settings, measured, here, refused", [
    (quantize.INT8_SETTINGS, VNNI, NO_VNNI, False),  # 7 bits: the same integers everywhere
    (quantize.INT8_SETTINGS, None, NO_VNNI, False),
    ({**FULL_RANGE, "weight_type": "QUInt8"}, VNNI, NO_VNNI, False),  # U8U8 kernels do not saturate
    (FULL_RANGE, VNNI, NO_VNNI, True),  # measured exact, run saturating
    (FULL_RANGE, NO_VNNI, NO_VNNI, False),  # measured on a CPU that saturates alike
    (FULL_RANGE, NO_VNNI, VNNI, False),  # exact here
    (None, None, NO_VNNI, True),  # a bundle from before the settings were recorded
    (None, None, VNNI, False),
    (FULL_RANGE, VNNI, {"x86": True, "vnni": None, "flags": []}, True),  # unknown here: not assumed exact
    (FULL_RANGE, VNNI, {"x86": False, "vnni": False, "flags": []}, False),  # no x86 U8S8 kernels
])
def test_int8_portability(settings, measured, here, refused):
    assert (int8_portability_problem(settings, measured, here) is not None) == refused


def test_int8_graphs_measured_elsewhere_are_refused_on_a_cpu_that_saturates(int8_bundle, tmp_path, monkeypatch):
    import textsam_eus.engines.ort_engine as ort_engine

    out = tmp_path / "b"
    shutil.copytree(int8_bundle, out)
    b = read_bundle(out)
    b.int8 = {**b.int8, "settings": FULL_RANGE, "measured_on": VNNI}
    write_bundle(out, b)
    monkeypatch.setattr(ort_engine, "cpu_features", lambda: NO_VNNI)
    with pytest.raises(BundleError, match=r"cannot run int8 here: its int8 graphs use full-range int8 weights.*"
                                          r"measured on a CPU with VNNI.*re-quantize it on this machine"):
        create_engine("onnxruntime", bundle=out, precision="int8")
    create_engine("onnxruntime", bundle=out, precision="fp32")  # fp32 is not affected
    monkeypatch.setattr(ort_engine, "cpu_features", lambda: VNNI)
    create_engine("onnxruntime", bundle=out, precision="int8")
    b.int8 = {k: v for k, v in b.int8.items() if k not in ("settings", "measured_on")}  # an older bundle
    write_bundle(out, b)
    monkeypatch.setattr(ort_engine, "cpu_features", lambda: NO_VNNI)
    with pytest.raises(BundleError, match="an unrecorded CPU"):
        create_engine("onnxruntime", bundle=out, precision="int8")


@pytest.mark.slow
def test_parity_on_frames_where_nothing_is_found_is_refused(fp32_bundle, tmp_path):
    """Empty against empty is no evidence: with a mask threshold no logit reaches, the real parity check compares
    no frame and the int8 export is refused, the bundle left as it was."""
    out = tmp_path / "b"
    shutil.copytree(fp32_bundle, out)
    b = read_bundle(out)
    b.mask_threshold = 1e6
    write_bundle(out, b)
    before = _snapshot(out)
    with pytest.raises(ExportError, match=r"the fp32 model finds a mask in 0 of 6 synthetic frames .*fewer than 3"):
        quantize.add_int8(out, min_mean_iou=0.0)
    assert _snapshot(out) == before


@pytest.mark.slow
def test_parity_counts_only_frames_with_a_mask(fp32_bundle):
    b = read_bundle(fp32_bundle)
    frames = [np.zeros((64, 64, 3), np.uint8)] * 2
    b.mask_threshold = 1e6  # nothing found: nothing compared
    par = quantize.int8_parity(b, {}, frames)
    assert par["frames"] == 2 and par["frames_compared"] == 0 and par["frames_with_mask"] == 0
    assert par["mean_mask_iou"] is None and par["min_mask_iou"] is None
    b.mask_threshold = -1e6  # everything is a mask in both: compared, IoU 1
    par = quantize.int8_parity(b, {}, frames)
    assert par["frames_compared"] == par["frames_with_mask"] == 2 and par["mean_mask_iou"] == 1.0


def test_refusal_names_the_frames_once():
    msg = quantize._refusal("b", {"mean_mask_iou": 0.9, "min_mask_iou": 0.8, "frames": 18, "frames_compared": 17,
                                  "frames_with_mask": 16}, "18 phantom frames (shared EUS clips absent)", 0.98)
    assert "18 18" not in msg and "over the 17 frames with a mask of 18 phantom frames" in msg
    assert "\n" not in msg


def _low_parity(bundle, paths, frames):
    return {"mean_mask_iou": 0.5, "min_mask_iou": 0.2, "frames": len(frames), "frames_compared": len(frames),
            "frames_with_mask": len(frames)}


def _high_parity(bundle, paths, frames):
    return {"mean_mask_iou": 0.999, "min_mask_iou": 0.99, "frames": len(frames), "frames_compared": len(frames),
            "frames_with_mask": len(frames)}


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


@pytest.mark.slow
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
    capsys.readouterr()
    monkeypatch.setattr(quantize, "int8_parity", _high_parity)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--int8", "--no-verify"]) == 0
    b = read_bundle(out)
    assert "encoder_int8" in b.files and b.int8["parity"]["mean_mask_iou"] == 0.999
    assert b.source["checkpoint"].endswith("m.safetensors")
    src = b.int8["parity"]["frames_source"]
    assert "real EUS frames" in src or "phantom frames" in src
    assert "int8 vs fp32" in capsys.readouterr().out
    # the real parity on this CPU: whichever way it goes, the command keeps its promise
    monkeypatch.setattr(quantize, "int8_parity", real)
    again = tmp_path / "again"
    rc = main(["export", "--checkpoint", str(ckpt), "--out", str(again), "--int8", "--no-verify"])
    captured = capsys.readouterr()
    if rc == 0:
        par = read_bundle(again).int8["parity"]
        assert par["mean_mask_iou"] >= 0.98 and par["frames_with_mask"] >= quantize.INT8_MIN_MASK_FRAMES
    else:
        assert rc == 1 and not again.exists() and len(captured.err.strip().splitlines()) == 1
        assert "int8 refused" in captured.err

"""Tampered-but-rehashed bundles: bundle.json edited (or a graph replaced) and every sha256 recomputed, so the
hash check passes. Each must still be a one-line re-export error at load (values bounded, graphs' inputs and
outputs checked against bundle.json, external-data files listed and hashed) or, for NaN weights, at the first frame.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import trained_like_tiny
from textsam_eus.cli import main
from textsam_eus.engines import create_engine
from textsam_eus.engines.base import NonFiniteOutputError
from textsam_eus.engines.graph_io import check_graph_io
from textsam_eus.export.onnx_export import export_bundle
from textsam_eus.core.hashing import file_sha256 as sha256
from textsam_eus.model.bundle import BundleError, read_bundle, write_bundle

REEXPORT = "re-export the bundle"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A real tiny bundle (image_size 256, embedding (1, 128, 16, 16), low-res 64, one prompt token)."""
    out = tmp_path_factory.mktemp("made")
    export_bundle(trained_like_tiny(0), out, verify=False)
    return out


@pytest.fixture
def bundle(made, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(made, out)
    return out


def _meta(folder):
    return json.loads((folder / "bundle.json").read_text())


def rehash(folder, meta=None):
    """Save ``meta`` (default: as it is) with every listed file's sha256 recomputed: the hash check passes."""
    meta = meta or _meta(folder)
    names = [*meta["files"].values(), *(n for refs in meta.get("external_data", {}).values() for n in refs)]
    meta["hashes"] = {n: sha256(folder / n) for n in names}
    (folder / "bundle.json").write_text(json.dumps(meta))


def _edit(folder, **fields):
    meta = _meta(folder)
    meta.update(fields)
    rehash(folder, meta)


def _refused(folder, *needles):
    with pytest.raises(BundleError) as err:
        create_engine("onnxruntime", bundle=folder, threads=1)
    msg = str(err.value)
    assert "\n" not in msg and REEXPORT in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def _frame():
    img = np.full((200, 240, 3), 90, np.uint8)
    cv2.circle(img, (120, 100), 40, (30, 30, 30), -1)
    return img


def test_the_untampered_bundle_loads_and_runs(bundle):
    engine = create_engine("onnxruntime", bundle=bundle, threads=1)
    r = engine.segment(_frame())
    assert r.mask.shape == (200, 240) and np.isfinite(r.iou)


def test_an_image_size_the_graphs_were_not_made_for(bundle):
    _edit(bundle, image_size=512)  # consistent with the embedding grid (patches of 32), not with the graphs
    _refused(bundle, "encoder.onnx does not fit bundle.json as the encoder graph",
             "input image has shape (1, 3, 256, 256), expected (1, 3, 512, 512)")


def test_a_graph_copied_over_another(bundle):
    shutil.copy(bundle / "decoder_text.onnx", bundle / "encoder.onnx")
    rehash(bundle)
    _refused(bundle, "as the encoder graph: inputs ['image_embeddings', 'text_tokens'], expected ['image']")


def test_a_refinement_graph_as_the_text_decoder(bundle):
    shutil.copy(bundle / "decoder_refine.onnx", bundle / "decoder_text.onnx")
    rehash(bundle)
    _refused(bundle, "as the decoder_text graph: inputs", "'point_coords'")


@pytest.mark.parametrize("size", [100000, 4112, 16])
def test_an_image_size_out_of_bounds_is_refused_before_any_graph_loads(bundle, size):
    _edit(bundle, image_size=size)
    with pytest.raises(BundleError, match=rf"image_size is {size}, expected an int in \[32, 4096\]"):
        read_bundle(bundle, verify=False)


@pytest.mark.parametrize("fields,needle", [
    ({"embedding_shape": [1, 128, 32, 32]}, "lowres_size is 64, expected 4 x the embedding grid, 128"),
    ({"embedding_shape": [2, 128, 16, 16]}, "embedding_shape is [2, 128, 16, 16], expected [1, C, g, g]"),
    ({"embedding_shape": [1, 128, 16, 8]}, "expected [1, C, g, g]"),
    ({"embedding_shape": [1, 128, 24, 24], "lowres_size": 96}, "embedding_shape is [1, 128, 24, 24]"),  # 256 % 24
    ({"embedding_shape": [1, 128, 32, 32], "lowres_size": 128, "image_size": 32}, "embedding_shape"),  # 1 px
    ({"embedding_shape": [1, 5000, 16, 16]}, "4 ints in [1, 4096]"),
    ({"pixel_std": [1e-9, 1.0, 1.0]}, "pixel_std is"),
    ({"pixel_mean": [1e6, 0.0, 0.0]}, "pixel_mean is"),
    ({"mask_threshold": 1e9}, "mask_threshold is 1000000000.0, expected a number in [-1e+06, 1e+06]"),
    ({"presence_show_frames": 10**9}, "presence_show_frames is"),
    ({"prompt_tokens": [[0.0] * 128] * 65}, "prompt_tokens is"),
])
def test_inconsistent_or_unbounded_values_are_refused(bundle, fields, needle):
    _edit(bundle, **fields)
    with pytest.raises(BundleError) as err:
        read_bundle(bundle)
    assert needle in str(err.value) and REEXPORT in str(err.value) and "\n" not in str(err.value)


def test_a_consistent_edit_of_the_shapes_is_caught_by_the_graphs(bundle):
    _edit(bundle, embedding_shape=[1, 128, 32, 32], lowres_size=128)  # a 32-grid: passes the value checks
    _refused(bundle, "as the encoder graph: output image_embeddings has shape (1, 128, 16, 16), "
                     "expected (1, 128, 32, 32)")
    _edit(bundle, embedding_shape=[1, 64, 16, 16], lowres_size=64, prompt_tokens=[[0.1] * 64])
    _refused(bundle, "output image_embeddings has shape (1, 128, 16, 16), expected (1, 64, 16, 16)")


def test_a_second_prompt_token_the_graphs_do_not_take(bundle):
    meta = _meta(bundle)
    _edit(bundle, prompt_tokens=meta["prompt_tokens"] * 2)
    _refused(bundle, "as the decoder_text graph: input text_tokens has shape (1, 1, 128), expected (1, 2, 128)",
             "2 prompt token(s)")


def test_an_opset_that_is_no_number(bundle):
    meta = _meta(bundle)
    meta["versions"]["opset"] = "seventeen"
    rehash(bundle, meta)
    _refused(bundle, "versions.opset is 'seventeen'")


def test_tensorrt_style_shapes_are_checked_the_same_way(bundle):
    b = read_bundle(bundle)
    emb, tok = ("image_embeddings", (1, 128, 16, 16), None), ("text_tokens", (1, 1, 128), None)
    outs = [("low_res_masks", (1, 1, 64, 64), None), ("iou_predictions", (1, 1), None)]
    check_graph_io(b, "decoder_refine", "p.plan", [emb, tok, ("point_coords", (1, -1, 2), None),
                                                   ("point_labels", (1, -1), None)], outs)
    with pytest.raises(BundleError, match=r"input point_coords has shape \(1, 3, 2\), expected \(1, N, 2\)"):
        check_graph_io(b, "decoder_refine", "p.plan", [emb, tok, ("point_coords", (1, 3, 2), None),
                                                       ("point_labels", (1, -1), None)], outs)
    with pytest.raises(BundleError, match=r"outputs \['iou_predictions', 'low_res_masks'\], expected"):
        check_graph_io(b, "decoder_text", "p.plan", [emb, tok], outs[::-1])  # the engines unpack them in order


# ------------------------------------------------------------------------------------------- external data
def _to_external(folder, graph="encoder.onnx", data="encoder.onnx.data"):
    model = onnx.load(str(folder / graph))
    onnx.save_model(model, str(folder / graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data, size_threshold=0)
    return folder / data


def test_external_data_is_listed_and_hashed_by_write_bundle(bundle):
    data = _to_external(bundle)
    write_bundle(bundle, read_bundle(bundle, verify=False))  # as an export writing external data would
    meta = _meta(bundle)
    assert meta["external_data"] == {"encoder.onnx": ["encoder.onnx.data"]}
    assert meta["hashes"]["encoder.onnx.data"] == sha256(data)
    engine = create_engine("onnxruntime", bundle=bundle, threads=1)
    assert np.isfinite(engine.segment(_frame()).iou)
    # NaN weights in the external file: the hash check refuses it now
    raw = bytearray(data.read_bytes())
    raw[:64] = np.full(16, np.nan, np.float32).tobytes()
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="encoder.onnx.data does not match bundle.json"):
        create_engine("onnxruntime", bundle=bundle, threads=1)


def test_external_data_that_bundle_json_does_not_list_is_refused(bundle):
    data = _to_external(bundle)
    raw = bytearray(data.read_bytes())
    raw[:] = np.full(len(raw) // 4, np.nan, np.float32).tobytes()
    data.write_bytes(bytes(raw))
    rehash(bundle)  # the graphs' own hashes match; the data file is not in bundle.json
    _refused(bundle, "encoder.onnx loads its weights from external-data file(s) ['encoder.onnx.data'] that "
                     "bundle.json does not list or hash")


def test_listed_external_data_must_stay_inside_the_folder(bundle, tmp_path):
    _to_external(bundle)
    write_bundle(bundle, read_bundle(bundle, verify=False))
    meta = _meta(bundle)
    meta["external_data"] = {"encoder.onnx": ["../elsewhere.data"]}
    meta["hashes"]["../elsewhere.data"] = "0" * 64
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="'../elsewhere.data' is not a file inside the bundle folder"):
        read_bundle(bundle, verify=False)
    meta["external_data"] = {"not_a_graph.onnx": ["encoder.onnx.data"]}
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="the external data of a graph listed in files"):
        read_bundle(bundle, verify=False)


# ------------------------------------------------------------------------------------------- NaN weights
def _nan_weights(folder, graph="decoder_text.onnx"):
    model = onnx.load(str(folder / graph))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    arr[...] = np.nan
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save_model(model, str(folder / graph))
    rehash(folder)


def test_nan_weights_are_an_error_at_the_first_frame_not_empty_results(bundle):
    _nan_weights(bundle)
    engine = create_engine("onnxruntime", bundle=bundle, threads=1)  # nothing at load can see the values
    with pytest.raises(NonFiniteOutputError, match=r"gives NaN/Inf .* in the text-only pass: .*re-export") as err:
        engine.segment(_frame())
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_stream_with_nan_weights_ends_with_one_line(bundle, tmp_path, capsys):
    _nan_weights(bundle)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"f{i}.png"), _frame())
    rc = main(["stream", "--source", str(frames), "--bundle", str(bundle), "--engine", "onnxruntime",
               "--out", str(tmp_path / "out"), "--no-progress", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert any("NaN/Inf" in line and REEXPORT in line for line in err), err
    assert not any("Traceback" in line for line in err), err

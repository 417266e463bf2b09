"""bundle.json read back: files stay inside the folder, every file has a hash, hand-edited values are checked."""

from __future__ import annotations

import json
import re

import pytest

from textsam_eus.core.hashing import file_sha256 as sha256
from textsam_eus.model.bundle import Bundle, BundleError, read_bundle, write_bundle

WIDTH = 8
FILES = {"encoder": "encoder.onnx", "decoder_text": "decoder_text.onnx", "decoder_refine": "decoder_refine.onnx"}


@pytest.fixture
def folder(tmp_path):
    """A small, valid bundle (placeholder graph files; read_bundle only hashes them)."""
    out = tmp_path / "bundle"
    out.mkdir()
    for name in FILES.values():
        (out / name).write_bytes(b"graph " + name.encode())
    write_bundle(out, Bundle(preset="tiny", image_size=256, embedding_shape=[1, WIDTH, 16, 16], lowres_size=64,
                             pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
                             mask_threshold=0.0, refine_iterations=2, prompt_tokens=[[0.1] * WIDTH],
                             files=dict(FILES)))
    return out


def _meta(folder):
    return json.loads((folder / "bundle.json").read_text())


def _save(folder, meta):
    (folder / "bundle.json").write_text(json.dumps(meta))


def _one_line_error(folder, match, verify=True):
    with pytest.raises(BundleError, match=match) as err:
        read_bundle(folder, verify=verify)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_written_bundle_reads_back(folder):
    b = read_bundle(folder)
    assert b.files == FILES and set(b.hashes) == set(FILES.values())
    assert read_bundle(folder, verify=False).prompt_tokens == [[0.1] * WIDTH]


def _point_encoder_at(folder, tmp_path, how):
    """Make the encoder entry lead outside the folder, to a real file whose hash bundle.json records."""
    other = tmp_path / "other"
    other.mkdir(exist_ok=True)
    outside = other / "encoder.onnx"
    outside.write_bytes(b"someone else's graph")
    meta = _meta(folder)
    if how == "dotdot":
        name = "../other/encoder.onnx"
    elif how == "absolute":
        name = str(outside)
    else:  # a symlink inside the folder that resolves outside it
        (folder / "encoder.onnx").unlink()
        (folder / "encoder.onnx").symlink_to(outside)
        name = "encoder.onnx"
    meta["files"]["encoder"] = name
    meta["hashes"][name] = sha256(outside)
    _save(folder, meta)
    return name


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
@pytest.mark.parametrize("verify", [True, False])
def test_files_outside_the_folder_are_refused(folder, tmp_path, how, verify):
    name = _point_encoder_at(folder, tmp_path, how)
    msg = _one_line_error(folder, "is not a file inside the bundle folder", verify=verify)
    assert repr(name) in msg and "'encoder'" in msg
    assert "re-export the bundle ('textsam-eus export --checkpoint CKPT --out DIR')" in msg


@pytest.mark.parametrize("name", ["/etc/passwd", "../../../../../../../../etc/passwd", "."])
def test_system_paths_are_refused_even_unverified(folder, name):
    meta = _meta(folder)
    meta["files"]["decoder_text"] = name
    meta["hashes"][name] = "0" * 64
    _save(folder, meta)
    _one_line_error(folder, re.escape(repr(name)) + ".*is not a file inside the bundle folder", verify=False)


def test_tensorrt_plans_must_stay_inside(folder, tmp_path):
    plan = tmp_path / "encoder.plan"
    plan.write_bytes(b"plan")
    meta = _meta(folder)
    meta["tensorrt"] = {"plan_encoder": "../encoder.plan", "fp16": True}
    meta["hashes"]["../encoder.plan"] = sha256(plan)
    _save(folder, meta)
    _one_line_error(folder, "'plan_encoder' -> '../encoder.plan' is not a file inside the bundle folder")


@pytest.mark.parametrize("verify", [True, False])
def test_every_file_needs_a_hash(folder, verify):
    meta = _meta(folder)
    del meta["hashes"]["decoder_refine.onnx"]
    _save(folder, meta)
    _one_line_error(folder, r"'decoder_refine.onnx' \(decoder_refine\) has no sha256 in bundle.json; re-export",
                    verify=verify)
    del meta["hashes"]
    _save(folder, meta)
    _one_line_error(folder, "has no sha256 in bundle.json; re-export the bundle", verify=verify)


def test_plans_need_a_hash(folder):
    (folder / "encoder.plan").write_bytes(b"plan")
    meta = _meta(folder)
    meta["tensorrt"] = {"plan_encoder": "encoder.plan"}
    _save(folder, meta)
    _one_line_error(folder, "'encoder.plan' .*has no sha256")


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field,value", [
    ("image_size", "256"), ("image_size", 250), ("image_size", 0), ("image_size", -16), ("image_size", 256.0),
    ("image_size", True), ("image_size", None),
    ("embedding_shape", [1, WIDTH, 16]), ("embedding_shape", [1, 0, 16, 16]), ("embedding_shape", [1, 8.5, 16, 16]),
    ("embedding_shape", "1x8x16x16"),
    ("lowres_size", 0), ("lowres_size", "64"),
    ("pixel_mean", [1.0, 2.0]), ("pixel_mean", [1.0, 2.0, NAN]), ("pixel_mean", [1.0, "2", 3.0]),
    ("pixel_std", [1.0, 0.0, 1.0]), ("pixel_std", [1.0, -1.0, 1.0]), ("pixel_std", [1.0, INF, 1.0]),
    ("mask_threshold", "0"), ("mask_threshold", NAN), ("mask_threshold", INF), ("mask_threshold", None),
    ("refine_iterations", -1), ("refine_iterations", 1.5), ("refine_iterations", "2"),
    ("prompt_tokens", []), ("prompt_tokens", [[]]), ("prompt_tokens", [[0.1] * (WIDTH - 1)]),
    ("prompt_tokens", [[0.1] * WIDTH, [0.1] * (WIDTH - 1)]), ("prompt_tokens", [[NAN] * WIDTH]),
    ("prompt_tokens", [0.1] * WIDTH), ("prompt_tokens", "tumor"), ("prompt_tokens", [["0.1"] * WIDTH]),
])
def test_hand_edited_values_are_refused(folder, field, value):
    meta = _meta(folder)
    meta[field] = value
    _save(folder, meta)
    msg = _one_line_error(folder, re.escape(f"{field} is ") + ".*expected.*; re-export the bundle", verify=False)
    assert repr(value)[:40] in msg  # the value as read back (NaN/Inf survive the JSON round trip)


def test_prompt_width_follows_embedding_shape(folder):
    meta = _meta(folder)
    meta["embedding_shape"] = [1, WIDTH * 2, 16, 16]
    _save(folder, meta)
    _one_line_error(folder, f"prompt_tokens is .*rows of {WIDTH * 2} finite numbers")


@pytest.mark.parametrize("field,value", [("files", ["encoder.onnx"]), ("hashes", "abc"), ("tensorrt", [])])
def test_sections_must_be_objects(folder, field, value):
    meta = _meta(folder)
    meta[field] = value
    _save(folder, meta)
    _one_line_error(folder, f"{field} is .*expected a JSON object")


def test_bundle_json_must_be_an_object(folder):
    (folder / "bundle.json").write_text("[1, 2]")
    _one_line_error(folder, "is not a TextSAM-EUS bundle")



@pytest.mark.parametrize("value", [-0.42, 0.0, 1.7, None])
def test_presence_threshold_is_on_the_scores_scale(folder, value):
    meta = _meta(folder)
    meta["presence_threshold"] = value
    _save(folder, meta)
    assert read_bundle(folder).presence_threshold == value


@pytest.mark.parametrize("value", [NAN, INF, 1e7, "0.5", True])
def test_presence_threshold_must_be_finite_and_bounded(folder, value):
    meta = _meta(folder)
    meta["presence_threshold"] = value
    _save(folder, meta)
    _one_line_error(folder, "presence_threshold is .*expected null or a number in", verify=False)

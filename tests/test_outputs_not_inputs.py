"""An output is never an input of the same command: eval, compare, train and export refuse, before any work, an
output path that names one of the files they read (by its own path, ``..``, a symlink or a hard link)."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from textsam_eus.cli import main
from textsam_eus.model.checkpoint import save_checkpoint
from textsam_eus.model.registry import build_textsam


def _one_line_error(capsys, command, *needles):
    assert main(command) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for needle in needles:
        assert re.search(needle, err), (needle, err)
    return err


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    return save_checkpoint(build_textsam("tiny", image_size=128, patch_size=16), run / "best.safetensors")


@pytest.fixture
def no_work(monkeypatch):
    """Any evaluation, training or export fails the test: the refusal must come first."""
    from textsam_eus.export import onnx_export
    from textsam_eus.train import evaluate as E
    from textsam_eus.train import trainer

    def fail(*a, **k):
        raise AssertionError("work started before the outputs were checked")
    monkeypatch.setattr(E, "evaluate", fail)
    monkeypatch.setattr(trainer.Trainer, "__init__", fail)
    monkeypatch.setattr(onnx_export, "export_bundle", fail)


def _eval(ckpt, *extra):
    return ["eval", "--checkpoint", str(ckpt), "--phantom", "1", "--phantom-size", "128", "--mode", "auto",
            "--no-progress", "--threads", "1", *extra]


def _spellings(path, tmp_path):
    """The same file by its path, through '..', a symlink and a hard link."""
    link = tmp_path / "link.safetensors"
    link.symlink_to(path)
    hard = tmp_path / "hard.safetensors"
    os.link(path, hard)
    return [str(path), str(path.parent / ".." / path.parent.name / path.name), str(link), str(hard)]


@pytest.mark.parametrize("flag", ["--json", "--csv"])
def test_eval_never_writes_over_its_checkpoint(tmp_path, ckpt, capsys, no_work, flag):
    before = ckpt.read_bytes()
    for spelling in _spellings(ckpt, tmp_path):
        _one_line_error(capsys, _eval(ckpt, flag, spelling, "--overwrite"),
                        f"{flag} .* is also the --checkpoint input of this command", "choose another output path")
    assert ckpt.read_bytes() == before


def test_eval_never_writes_over_its_data(tmp_path, ckpt, capsys, no_work):
    import cv2
    import numpy as np

    (tmp_path / "img.png").write_bytes(cv2.imencode(".png", np.zeros((32, 32), np.uint8))[1].tobytes())
    mask = tmp_path / "mask.png"
    mask.write_bytes(cv2.imencode(".png", np.zeros((32, 32), np.uint8))[1].tobytes())
    manifest = tmp_path / "set.csv"
    manifest.write_text("image,mask,case,split\nimg.png,mask.png,p1,test\n")
    listed = [manifest.read_bytes(), mask.read_bytes()]
    _one_line_error(capsys, _eval(ckpt, "--data", str(manifest), "--csv", str(manifest), "--overwrite"),
                    "--csv .* is also the --data input")
    # a mask the manifest lists is an input too (checked once the data are listed, before they are read)
    _one_line_error(capsys, _eval(ckpt, "--data", str(manifest), "--json", str(mask),
                                  "--overwrite"), "--json .*mask.png is also the --data input")
    assert [manifest.read_bytes(), mask.read_bytes()] == listed


def test_eval_never_writes_over_the_predictions(tmp_path, capsys, no_work):
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "a.png").write_bytes(b"a prediction")
    _one_line_error(capsys, ["eval", "--mode", "predictions", "--predictions", str(preds), "--phantom", "1",
                             "--json", str(preds / "a.png"), "--overwrite"], "is also the --predictions input")
    assert (preds / "a.png").read_bytes() == b"a prediction"


def test_compare_never_writes_over_an_evaluation(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        p.write_text(json.dumps({"per_image": []}))
    for target, name in ((a, "A"), (b, "B")):
        _one_line_error(capsys, ["compare", str(a), str(b), "--json", str(target), "--overwrite"],
                        f"--json .* is also the {name} input")
    assert json.loads(a.read_text()) == {"per_image": []}


def test_train_never_removes_its_init_checkpoint(tmp_path, ckpt, capsys, no_work):
    before = ckpt.read_bytes()
    _one_line_error(capsys, ["train", "--init", str(ckpt), "--out", str(ckpt.parent), "--overwrite", "--phantom",
                             "1", "--no-progress"], r"--out .*best.safetensors is also the --init input")
    manifest = ckpt.parent / "log.csv"
    manifest.write_text("image,mask,case\n")
    _one_line_error(capsys, ["train", "--preset", "tiny", "--data", str(manifest), "--out", str(ckpt.parent),
                             "--overwrite"], r"--out .*log.csv is also the --data input")
    assert ckpt.read_bytes() == before and manifest.read_text() == "image,mask,case\n"


def test_export_never_writes_over_its_checkpoint(tmp_path, ckpt, capsys, no_work):
    before = ckpt.read_bytes()
    _one_line_error(capsys, ["export", "--checkpoint", str(ckpt), "--out", str(ckpt)],
                    "--out .* is also the --checkpoint input")
    other = tmp_path / "m.safetensors"
    other.write_bytes(before)
    _one_line_error(capsys, ["export", "--checkpoint", str(ckpt), "--out", str(other)], "is a file, not a folder")
    out = tmp_path / "bundle"
    out.mkdir()
    os.link(ckpt, out / "encoder.onnx")  # writing the graph would truncate the checkpoint through the hard link
    _one_line_error(capsys, ["export", "--checkpoint", str(ckpt), "--out", str(out)],
                    r"--out .*encoder.onnx is also the --checkpoint input")
    assert ckpt.read_bytes() == before


def test_outputs_beside_the_inputs_are_fine(tmp_path, ckpt, capsys):
    assert main(_eval(ckpt, "--json", str(ckpt.parent / "results.json"))) == 0
    assert json.loads((ckpt.parent / "results.json").read_text())["n"] == 1

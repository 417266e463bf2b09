"""What `export` and the cached export of `stream`/`demo` print: a bad checkpoint fails before anything says
"exporting", and library warnings come out as one line each, without source paths."""

from __future__ import annotations

import logging
import warnings

import pytest

from textsam_eus.cli import main
from textsam_eus.model.checkpoint import CheckpointError


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_a_bad_checkpoint_fails_before_exporting_is_announced(tmp_path, monkeypatch, capsys, content):
    from textsam_eus.runs.engine import cached_onnx_export as bundle_for

    monkeypatch.setenv("TEXTSAM_EUS_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        bundle_for(str(bad))
    assert "exporting" not in capsys.readouterr().out
    assert main(["demo", "--checkpoint", str(bad), "--engine", "onnxruntime", "--out", str(tmp_path / "o"),
                 "--frames", "2", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "exporting" not in out and err.count("\n") == 1 and "bad.safetensors" in err


def test_library_warnings_during_export_are_one_line_without_paths(tmp_path, monkeypatch, capsys):
    from textsam_eus.export import onnx_export

    def noisy_export(model, out, **kwargs):
        warnings.warn("Constant folding not applied\n  for some node", UserWarning)
        warnings.warn("Constant folding not applied\n  for some node", UserWarning)  # the same: said once
        warnings.warn("an API is deprecated", DeprecationWarning)
        logging.getLogger("onnxruntime.quantization").warning("Please consider to run pre-processing")
        raise onnx_export.ExportError("stop here")  # the warnings are what is under test
    monkeypatch.setattr(onnx_export, "export_bundle", noisy_export)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as a user's shell with PYTHONWARNINGS=default would show them
        assert main(["export", "--checkpoint", "demo", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["textsam-eus export: warning: Constant folding not applied for some node (UserWarning)",
                   "textsam-eus export: warning: an API is deprecated (DeprecationWarning)",
                   "textsam-eus export: warning: Please consider to run pre-processing",
                   "textsam-eus export: error: stop here"], err
    assert warnings.showwarning.__module__ == "warnings"  # restored afterwards
    assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "_OneLineHandler"]

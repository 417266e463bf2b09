"""Optional dependencies are probed in one module (core/imports.py); a missing one is a one-line error naming the
extra to install."""

from __future__ import annotations

import sys

import pytest

from textsam_eus.core import imports
from textsam_eus.core.errors import UnavailableError

PROBES = (imports.is_onnxruntime_available, imports.is_onnxruntime_gpu_available, imports.is_tensorrt_available,
          imports.is_pyav_available)


def _clear():
    for probe in PROBES:
        probe.cache_clear()


@pytest.fixture
def no_onnxruntime(monkeypatch):
    """This process as if neither onnxruntime flavour were installed."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    _clear()
    yield
    _clear()


def test_probes_are_cached_bools():
    _clear()
    for probe in PROBES:
        assert isinstance(probe(), bool)
        assert probe() is probe() and probe.cache_info().hits >= 1
    assert imports.is_pyav_available()  # a base dependency
    assert imports.is_onnxruntime_available()  # the test environment installs the cpu extra
    assert imports.require_pyav().__name__ == "av"


def test_missing_onnxruntime_names_the_extra(no_onnxruntime):
    assert not imports.is_onnxruntime_available() and not imports.is_onnxruntime_gpu_available()
    with pytest.raises(UnavailableError, match=r"pip install 'textsam-eus\[cpu\]'.*--engine torch"):
        imports.require_onnxruntime()
    with pytest.raises(UnavailableError, match="--no-verify"):
        imports.require_onnxruntime(instead="or export with --no-verify (no parity check)")
    from textsam_eus.engines import available_engines, fastest_engine

    ok, why = available_engines()["onnxruntime"]
    assert not ok and "textsam-eus[cpu]" in why
    assert fastest_engine() == "torch"  # on a CPU machine without onnxruntime


def test_missing_onnxruntime_is_a_one_line_cli_error(no_onnxruntime, tmp_path, capsys):
    from textsam_eus.cli import main

    assert main(["stream", "--source", "phantom:2", "--out", str(tmp_path / "o"), "--engine", "onnxruntime",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "textsam-eus[cpu]" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_tensorrt_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    _clear()
    try:
        assert not imports.is_tensorrt_available()
        with pytest.raises(imports.TensorRTUnavailable, match=r"pip install 'textsam-eus\[trt\]'"):
            imports.require_tensorrt()
        from textsam_eus.engines import available_engines, create_engine

        assert available_engines()["tensorrt"] == (False, imports.TENSORRT_HINT)
        with pytest.raises(UnavailableError, match=r"tensorrt.*not available.*textsam-eus\[trt\]"):
            create_engine("tensorrt", bundle="unused")
    finally:
        _clear()

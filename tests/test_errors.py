"""User-facing errors: one base class, printed by the CLI as one line; every other exception keeps its traceback."""

from __future__ import annotations

import pytest

from textsam_eus.cli import main
from textsam_eus.model.errors import OptionError, UnavailableError, UserError


def _error_classes():
    from textsam_eus.export.onnx_export import ExportError
    from textsam_eus.export.tensorrt_build import TensorRTUnavailable
    from textsam_eus.model.bundle import BundleError, PlanMismatchError
    from textsam_eus.model.checkpoint import CheckpointError
    from textsam_eus.model.config import ConfigError
    from textsam_eus.model.transforms import FrameError
    from textsam_eus.stream.base import SourceError
    from textsam_eus.stream.sinks.encoders import SinkError
    from textsam_eus.stream.outdir import OutputError
    from textsam_eus.stream.pipeline import StreamError
    from textsam_eus.stream.view.window import DisplayUnavailableError
    from textsam_eus.train.readers import DatasetError

    # class -> the built-in base it had before UserError existed (callers catching it keep working)
    return {ConfigError: ValueError, FrameError: ValueError, CheckpointError: ValueError, BundleError: ValueError,
            PlanMismatchError: ValueError, ExportError: RuntimeError, TensorRTUnavailable: RuntimeError,
            DatasetError: ValueError, SourceError: ValueError, SinkError: ValueError, OutputError: ValueError,
            StreamError: RuntimeError, DisplayUnavailableError: RuntimeError, OptionError: ValueError,
            UnavailableError: RuntimeError}


@pytest.mark.parametrize("cls, builtin", list(_error_classes().items()), ids=lambda c: getattr(c, "__name__", ""))
def test_error_classes_are_user_errors_and_keep_their_base(cls, builtin):
    assert issubclass(cls, UserError) and issubclass(cls, builtin)


def test_user_error_is_one_line_and_returns_1(capsys):
    assert main(["info", "--preset", "no-such-preset"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("textsam-eus info: error: unknown preset 'no-such-preset'") and "tiny" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_option_is_a_user_error(tmp_path, capsys):
    assert main(["stream", "--source", "phantom:2", "--out", str(tmp_path / "o"), "--fill-color", "nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert "invalid colour 'nope'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("exc", [ZeroDivisionError("bug"), ValueError("a bug, not a user error"),
                                 RuntimeError("also a bug")])
def test_programming_errors_keep_their_traceback(monkeypatch, exc):
    import textsam_eus.commands.info as info

    def broken(args):
        raise exc

    monkeypatch.setattr(info, "run", broken)
    with pytest.raises(type(exc), match=str(exc)):
        main(["info"])


def test_keyboard_interrupt_returns_130(monkeypatch, capsys):
    import textsam_eus.commands.info as info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"

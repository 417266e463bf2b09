"""Python warnings raised during a run (by pydicom, matplotlib, our own pixel rule, from any thread) as one line
each, ``warning: <package>: <first line>``, recorded in ``summary.json`` instead of the interpreter's two lines with
a source path.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["one_line_warnings", "warning_text"]


def _origin(filename: str) -> str:
    """The package a warning came from: ``pydicom`` for ``.../site-packages/pydicom/pixels/utils.py``."""
    parts = os.path.normpath(filename or "").split(os.sep)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            name = parts[parts.index(marker) + 1]
            return os.path.splitext(name)[0]
    if "textsam_eus" in parts:
        return ""
    return os.path.splitext(os.path.basename(filename or ""))[0]


def warning_text(message, category: type, filename: str) -> str:
    """One line: ``package: first line of the message`` (no package for ours)."""
    lines = str(message).strip().splitlines()
    text = lines[0].strip() if lines else category.__name__
    origin = _origin(filename)
    return f"{origin}: {text}" if origin else text


@contextmanager
def one_line_warnings(on_warning: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, every warning that would be shown goes to ``on_warning`` as one line (see the module
    docstring). Installed from the main thread only (the hook is process-wide); restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001 - the hook's signature
        try:
            on_warning(warning_text(message, category, filename))
        except Exception:  # noqa: BLE001 - a warning must never stop a run
            pass

    warnings.showwarning = show
    try:
        yield
    finally:
        if warnings.showwarning is show:
            warnings.showwarning = old

"""Library warnings in the CLI's one-line form, without source paths.

A Python warning raised by a library (torch's exporter, onnx, ONNX Runtime's quantizer, ...) would print as
``/site-packages/x.py:123: UserWarning: ...`` followed by the source line; a WARNING logged to the root logger
prints its bare message. Inside :func:`one_line_warnings` each becomes ``textsam-eus COMMAND: warning: MESSAGE`` on
one line of stderr, the same message once.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Iterator

MAX_CHARS = 300


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "..."


class _OneLineHandler(logging.Handler):
    def __init__(self, say) -> None:
        super().__init__(logging.WARNING)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        self.say(record.getMessage())


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Print library warnings (Python warnings, root-logger WARNINGs) as one line each, once, while inside."""
    seen: set[str] = set()

    def say(message: str) -> None:
        line = _one_line(message)
        if line and line not in seen:
            seen.add(line)
            print(f"textsam-eus {command}: warning: {line}", file=sys.stderr, flush=True)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        say(f"{message} ({category.__name__})")

    root = logging.getLogger()
    handler = _OneLineHandler(say)
    with warnings.catch_warnings():
        warnings.showwarning = show
        root.addHandler(handler)  # with a handler on the root, logging's bare last-resort output stays unused
        try:
            yield
        finally:
            root.removeHandler(handler)

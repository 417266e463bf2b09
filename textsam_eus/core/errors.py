"""The one base class of the errors a user can fix, and the two general kinds without a home of their own.

A :class:`UserError` is a problem with the user's input or environment (a file, a folder, an option, a missing
package or GPU), not with our code. Its message names the problem and the fix, in one line (it may list the
accepted forms below it). ``textsam-eus`` prints such an error as ``textsam-eus COMMAND: error: MESSAGE`` and exits
with 1; any other exception is a bug and keeps its traceback.

Every specific error class derives from :class:`UserError` and keeps the built-in base it always had, so code that
catches ``ValueError`` / ``RuntimeError`` keeps working: ``ConfigError`` (model config), ``FrameError`` (frames and
pixels), ``CheckpointError`` (weight files), ``BundleError`` (deployment bundles), ``ExportError``, ``DatasetError``
(training/evaluation data), ``SourceError`` / ``SinkError`` / ``OutputError`` / ``StreamError`` /
``DisplayUnavailableError`` (streaming), ``TensorRTUnavailable``.

No imports: every layer (also ``stream`` and ``common``, which stay free of torch) may import this module.
"""

from __future__ import annotations

__all__ = ["UserError", "OptionError", "UnavailableError"]


class UserError(Exception):
    """A problem with the user's input or environment; the message names it and the fix; printed as one line."""


class OptionError(UserError, ValueError):
    """An option or setting has an invalid value (the message names the option and what is accepted)."""


class UnavailableError(UserError, RuntimeError):
    """Something this needs is not available here: an optional package, a GPU, an execution provider (the message
    names what to install or what to use instead)."""

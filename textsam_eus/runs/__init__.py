"""One policy for every run: :class:`RunSettings` decides a run's settings (the ``stream`` options and their
defaults, in one place) and opens its engine; ``stream``, ``demo``, ``annotate``'s workers, ``serve`` and the
benchmarks all use it. ``stream --config FILE`` reads settings back (:func:`read_settings_file`), also from the
``summary.json`` of an earlier run, which records them.

Opening an engine may export ONNX into the cache (:func:`~textsam_eus.runs.engine.cached_onnx_export`): see
:meth:`RunSettings.open_engine`.
"""

from __future__ import annotations

from .settings import ENGINE_FIELDS, FILE_PIPELINE_FIELDS, STYLE_FIELDS, RunSettings, default, field_names
from .settings_file import SettingsFileError, merge_settings, read_settings_file

__all__ = ["RunSettings", "default", "field_names", "ENGINE_FIELDS", "FILE_PIPELINE_FIELDS", "STYLE_FIELDS",
           "SettingsFileError", "merge_settings", "read_settings_file"]

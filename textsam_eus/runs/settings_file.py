"""``stream --config FILE``: run settings from a TOML or YAML file, or from the ``summary.json`` of an earlier run.

A file holds settings by their names (``max_frames = 100``; ``max-frames`` and ``--max-frames`` are accepted too),
at its top level or in a ``[settings]`` table; a ``summary.json`` holds them under ``"settings"``, as the run
recorded them. Settings the file does not give keep their defaults; options given on the command line override
the file (:func:`merge_settings`). An unknown name is an error naming it and listing the valid ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import OptionError, UserError
from .settings import RunSettings, field_names

__all__ = ["SettingsFileError", "read_settings_file", "merge_settings", "TOML_SUFFIXES", "YAML_SUFFIXES"]

TOML_SUFFIXES = (".toml",)
YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)


class SettingsFileError(UserError, ValueError):
    """A ``--config`` file that cannot be read or holds something that is not a run setting."""


def read_settings_file(path: str | Path, valid: Iterable[str] | None = None) -> dict[str, Any]:
    """The settings in ``path`` by name (checked against ``valid``, default every :class:`RunSettings` field;
    values are checked when a RunSettings is made of them)."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in TOML_SUFFIXES + YAML_SUFFIXES + JSON_SUFFIXES:
        raise SettingsFileError(f"--config {path}: unknown kind of file {suffix or '(no suffix)'!r}; use a .toml or "
                                ".yaml file, or the summary.json of an earlier run")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsFileError(f"--config {path}: cannot read it ({exc.strerror or exc}); check the path") from None
    data = _parse(path, suffix, text)
    if not isinstance(data, dict):
        raise SettingsFileError(f"--config {path}: expected settings by name (a table), found "
                                f"{type(data).__name__}")
    if suffix in JSON_SUFFIXES and ("complete" in data or "frames_out" in data):  # a run's summary.json
        if not isinstance(data.get("settings"), dict):
            raise SettingsFileError(f"--config {path}: this summary.json has no \"settings\" (its run was made before "
                                    "runs recorded them); give the options again, or a TOML file of them")
        data = data["settings"]
    elif set(data) == {"settings"} and isinstance(data["settings"], dict):  # a [settings] table
        data = data["settings"]
    return _by_name(path, data, tuple(valid) if valid is not None else field_names())


def _parse(path: Path, suffix: str, text: str) -> Any:
    try:
        if suffix in TOML_SUFFIXES:
            import tomllib

            return tomllib.loads(text)
        if suffix in YAML_SUFFIXES:
            from ..core.imports import require_yaml

            yaml = require_yaml()
            try:
                return yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise ValueError(" ".join(str(exc).split())) from None
        return json.loads(text)
    except UserError:
        raise
    except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise SettingsFileError(f"--config {path}: not valid {suffix[1:].upper()}: {exc}") from None


def _by_name(path: Path, data: dict, valid: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in valid:
            raise SettingsFileError(f"--config {path}: unknown setting {key!r}; valid settings: {', '.join(valid)}")
        if name in out:
            raise SettingsFileError(f"--config {path}: setting {name!r} is given twice")
        out[name] = value
    return out


def merge_settings(options: dict[str, Any], given: Iterable[str] = (), config: str | Path | None = None,
                   **fixed: Any) -> RunSettings:
    """The settings of a run: ``options`` (a command's parsed options by name; those that are not settings are
    left out), over the settings of the ``config`` file when there is one, of which only the options in ``given``
    (typed on the command line) win; then ``fixed`` (a caller's own). Without ``config`` ``options`` are all used."""
    names = set(field_names())
    values = {k: v for k, v in options.items() if k in names}
    if config is not None:
        given = set(given)
        values = {**read_settings_file(config), **{k: v for k, v in values.items() if k in given}}
    try:
        return RunSettings(**{**values, **fixed})
    except OptionError as exc:
        if config is None:
            raise
        raise OptionError(f"{exc} (with --config {config})") from None

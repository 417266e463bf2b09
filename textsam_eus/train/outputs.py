"""Output paths of ``train``, ``eval`` and ``compare``: checked before any work, written whole, never replaced silently.

* A results file (``eval --json/--csv``, ``compare --json``) must be a file path whose folder exists or can be
  created and written; an existing folder, a trailing ``/``, a device or an existing file (without ``overwrite``)
  is a one-line :class:`OutputPathError` naming the fix. Files are written to a temporary name beside the target
  and renamed over it (:mod:`textsam_eus.core.files`), so a crash leaves the old file or the new one, never half of
  one.
* A training run's folder (``train --out``) holding an earlier run (:data:`RUN_FILES`) is refused unless the run
  is resumed or ``overwrite`` is given; :func:`clear_run` then removes only those files, never the user's others.

The same rule as the stream's output folders (:mod:`textsam_eus.stream.outdir`): refuse, or ``--overwrite``.

* An output is never one of the same command's inputs (:func:`check_not_inputs`): ``eval --checkpoint m.safetensors
  --json m.safetensors --overwrite`` is refused before any work, whatever path spells the file (``..``, a symlink, a
  hard link: existing files are compared with :func:`os.path.samefile`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.config import ConfigError
from ..core.files import PART_SUFFIX

__all__ = ["OutputPathError", "RUN_FILES", "check_distinct", "check_not_inputs", "check_output_file", "check_run_dir",
           "clear_run", "earlier_run_files"]

# what `train` writes into --out; removed by --overwrite (their temporary files too)
RUN_FILES = ("best.safetensors", "last.safetensors", "train_state.pt", "log.json", "log.csv")


class OutputPathError(ConfigError):
    """An output path cannot be used as given (the message names the fix)."""


def _writable_ancestor(path: Path, flag: str) -> None:
    """The nearest existing folder above ``path`` must be a folder this process can write to."""
    parent = next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not parent.is_dir():
        raise OutputPathError(f"{flag} {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {flag} {path}: {parent} is not writable; choose a folder you can "
                              "write to")


def check_output_file(path: str | os.PathLike, flag: str, overwrite: bool = False,
                      example: str = "results.json") -> Path:
    """Check a results-file path without changing anything; raise OutputPathError when it cannot be used."""
    text = os.fspath(path)
    p = Path(text)
    if not text.strip():
        raise OutputPathError(f"{flag} is empty; give a file name such as {example}")
    if text.endswith(("/", os.sep)) or p.is_dir():
        raise OutputPathError(f"{flag} {text} is a folder; give a file path such as {p / example}")
    if len(p.name.encode()) > 255:
        raise OutputPathError(f"{flag} {text[:60]}... is too long a name for this file system; choose a shorter one")
    if p.exists() or p.is_symlink():
        if not p.is_file():
            raise OutputPathError(f"{flag} {text} exists and is not a regular file; choose a file path")
        if not overwrite:
            raise OutputPathError(f"{flag} {text} already exists (an earlier result?); pass --overwrite to replace "
                                  "it, or choose another file name")
    _writable_ancestor(p, flag)
    return p


def check_distinct(paths: dict[str, str | os.PathLike | None]) -> None:
    """Refuse two outputs of one command that name the same file (the second would replace the first)."""
    seen: dict[Path, str] = {}
    for flag, path in paths.items():
        if not path:
            continue
        key = Path(path).absolute()
        if key in seen:
            raise OutputPathError(f"{seen[key]} and {flag} both name {path}; give each its own file")
        seen[key] = flag


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same inode when both exist (symlinks and hard links), else the
    same resolved path."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError, ValueError):  # unreadable, a symlink loop, a NUL byte: not provably the same
        return False


def check_not_inputs(outputs: dict[str, str | os.PathLike | None] | list[tuple[str, str | os.PathLike]],
                     inputs: dict[str, str | os.PathLike | list | tuple | None]) -> None:
    """Refuse an output path that is one of the command's inputs (writing it would replace that input).

    ``outputs``: flag -> file the command writes (or replaces), or (flag, file) pairs; ``inputs``: flag -> a path,
    or a list of paths, the command reads (None entries are ignored). Raises OutputPathError naming both flags.
    """
    for out_flag, out in (outputs.items() if isinstance(outputs, dict) else outputs):
        if not out:
            continue
        for in_flag, value in inputs.items():
            for path in (value if isinstance(value, (list, tuple)) else [value]):
                if path and same_file(out, path):
                    same = "" if os.fspath(out) == os.fspath(path) else f" ({path})"
                    raise OutputPathError(f"{out_flag} {out} is also the {in_flag} input of this command{same}: "
                                          "writing it would replace that input; choose another output path")


def earlier_run_files(folder: Path) -> list[str]:
    return [name for name in RUN_FILES if (folder / name).exists()]


def check_run_dir(path: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> Path:
    """Check ``train --out`` without changing anything; raise OutputPathError when it cannot be used as asked."""
    p = Path(path)
    if resume and overwrite:
        raise OutputPathError("--resume continues the run in --out and --overwrite starts it over; give one of them")
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"--out {p} is a file, not a folder; choose a folder path (it is created if missing)")
    if len(p.name.encode()) > 255:
        raise OutputPathError(f"--out {str(p)[:60]}... is too long a name for this file system; choose a shorter one")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write to --out {p}: permission denied; choose a folder you can write to")
        found = earlier_run_files(p)
        if resume:
            missing = [n for n in ("last.safetensors", "train_state.pt") if n not in found]
            if missing:
                raise OutputPathError(f"cannot resume: --out {p} has no {' or '.join(missing)} (no run to continue "
                                      "there); train without --resume first, or give the run's folder")
        elif found and not overwrite:
            raise OutputPathError(f"--out {p} already holds a training run ({', '.join(found)}); pass --resume to "
                                  "continue it, --overwrite to start over (removes only the run's files), or choose "
                                  "another folder")
    else:
        if resume:
            raise OutputPathError(f"cannot resume: --out {p} does not exist; train without --resume first, or give "
                                  "the run's folder")
        _writable_ancestor(p, "--out")
    return p


def clear_run(folder: str | os.PathLike) -> list[str]:
    """Remove an earlier run's files (:data:`RUN_FILES` and their temporaries: ``<name>.part``, and the
    ``.<name>.<pid>.tmp`` of runs by versions before the one atomic write) from ``folder``; nothing else."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name in RUN_FILES or any(p.name == n + PART_SUFFIX or (p.name.startswith(f".{n}.") and
                                      p.name.endswith(".tmp")) for n in RUN_FILES):
            if p.is_file() or p.is_symlink():
                p.unlink()
                removed.append(p.name)
    return removed

"""The list of a run's own outputs (``.textsam-eus.outputs`` in ``--out``), and what ``--overwrite`` may remove.

A run writes the list as it goes: every writer *claims* a path (:func:`claim`) before it creates the file, so the
list holds every file of the run also after a SIGKILL (a claimed file that never appeared is harmless). The file is
JSON lines: a header object, then one relative POSIX path per line (a folder ends with ``/``; a claimed file's
``<name>.part`` temporary is covered by it). A line cut short by a kill is skipped.

``--overwrite`` (:func:`plan_overwrite`) removes exactly the listed files and the listed folders left empty, and
refuses, before removing anything, when

* the input (``--source``) is, or lies inside, something it would remove, or
* a name a run writes (``masks/``, ``summary.json``, ... :data:`RUN_OUTPUTS`) would still hold something no run
  listed (a user's own ``masks/*.png``, a study's ``dicom/`` folder, an earlier version's outputs).

Listed paths are resolved inside ``--out`` only: absolute paths, ``..`` and paths through a symbolic link are
ignored, so an edited list cannot remove anything elsewhere.

No torch, no model imports (of ours only ``core``: the ``.part`` naming of :mod:`textsam_eus.core.files`).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..core.files import PART_SUFFIX, part_path

__all__ = ["MANIFEST_NAME", "RUN_OUTPUTS", "Manifest", "claim", "is_run_output", "plan_overwrite",
           "OverwritePlan"]

MANIFEST_NAME = ".textsam-eus.outputs"
_HEADER = {"textsam-eus": "outputs of a run", "version": 1}
# the names a run writes at the top of --out (masks_seg*, *.part are matched by prefix / suffix)
RUN_OUTPUTS = ("overlay.mp4", "masks", "masks.mkv", "overlays", "latency.json", "latency.csv", "frames.jsonl",
               "summary.json", "outputs.csv", "masks.nii.gz", "masks_coco.json", "dicom", "report.html")

_OPEN: dict[str, "Manifest"] = {}  # absolute folder -> the manifest being written there (open runs)
_OPEN_LOCK = threading.Lock()


def is_run_output(name: str) -> bool:
    """True for a top-level name a run may write."""
    return name in RUN_OUTPUTS or name.endswith(PART_SUFFIX) or (name.startswith("masks_seg") and
                                                             name.endswith((".mkv", ".nii.gz")))


def claim(path: str | os.PathLike, is_dir: bool = False) -> None:
    """Record ``path`` (about to be written) as an output of the open run whose folder holds it; no-op elsewhere
    (a writer used outside a run)."""
    if not _OPEN:
        return
    p = os.path.abspath(path)
    with _OPEN_LOCK:
        roots = sorted(_OPEN, key=len, reverse=True)
    for root in roots:
        if p.startswith(root + os.sep):
            manifest = _OPEN.get(root)
            if manifest is not None:
                manifest.add(p[len(root) + 1:].replace(os.sep, "/"), is_dir)
            return


class Manifest:
    """Writes the list of ``folder``'s outputs for one run (started empty by :meth:`open`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.root = os.path.abspath(self.folder)
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._recent: set[str] = set()  # recently claimed (summary.json is claimed at every refresh)

    def open(self) -> None:
        fd = os.open(self.folder / MANIFEST_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(fd, (json.dumps(_HEADER) + "\n").encode())
        self._fd = fd
        with _OPEN_LOCK:
            _OPEN[self.root] = self

    def add(self, rel: str, is_dir: bool = False) -> None:
        parts = [p for p in rel.split("/") if p]
        if not parts:
            return
        lines = []
        with self._lock:
            if self._fd is None:
                return
            for i in range(1, len(parts) + 1):
                entry = "/".join(parts[:i]) + ("/" if i < len(parts) or is_dir else "")
                if entry in self._recent:
                    continue
                if len(self._recent) > 4096:
                    self._recent.clear()
                self._recent.add(entry)
                lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
            if lines:
                os.write(self._fd, "".join(lines).encode("utf-8", "surrogateescape"))

    def sweep(self, before: set[str]) -> None:
        """Claim what the run left that no writer claimed: new top-level entries (not in ``before``) and the
        contents of the folders it listed (a safety net for writers that do not claim)."""
        listed = read_manifest(self.folder) or set()
        for entry in sorted(os.listdir(self.folder)):
            if entry in _OWN or (entry in before and entry + "/" not in listed):
                continue
            path = self.folder / entry
            if path.is_dir() and not path.is_symlink():
                self.add(entry, is_dir=True)
                for dirpath, dirnames, filenames in os.walk(path):
                    base = os.path.relpath(dirpath, self.folder).replace(os.sep, "/")
                    for d in dirnames:
                        self.add(f"{base}/{d}", is_dir=True)
                    for f in filenames:
                        if f"{base}/{f}" not in listed:
                            self.add(f"{base}/{f}")
            elif entry not in listed:
                self.add(entry)

    def close(self) -> None:
        with _OPEN_LOCK:
            if _OPEN.get(self.root) is self:
                del _OPEN[self.root]
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


_OWN = {MANIFEST_NAME, ".textsam-eus.lock", ".textsam-eus.reserve"}


def read_manifest(folder: Path) -> set[str] | None:
    """The entries of ``folder``'s list of outputs, or ``None`` when it has none (lines that do not parse, as a
    last line cut by a kill, are skipped)."""
    try:
        with open(Path(folder) / MANIFEST_NAME, "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not lines:
        return None
    try:
        header = json.loads(lines[0])
    except ValueError:
        return None
    if not (isinstance(header, dict) and "textsam-eus" in header):
        return None
    entries = set()
    for line in lines[1:]:
        try:
            rel = json.loads(line)
        except ValueError:
            continue
        if isinstance(rel, str) and rel:
            entries.add(rel)
    return entries


def _inside(folder: Path, rel: str) -> Path | None:
    """``folder / rel`` when ``rel`` names something inside ``folder`` without a symbolic link on the way (the last
    part may be a link: removing it removes the link only); else ``None``."""
    if rel.startswith("/") or "\\" in rel or os.path.isabs(rel):
        return None
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    path = folder
    for p in parts[:-1]:
        path = path / p
        if path.is_symlink() or not path.is_dir():
            return None
    return path / parts[-1]


@dataclass
class OverwritePlan:
    """What ``--overwrite`` removes in ``folder``: ``files`` (unlinked), then ``dirs`` (removed when empty)."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def execute(self) -> None:
        for f in self.files:
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        for d in sorted(self.dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:  # not empty (files no run listed) or gone
                pass


def plan_overwrite(folder: Path, protect: Iterable[str | os.PathLike] = (), *,
                   error: type[Exception] = ValueError) -> OverwritePlan:
    """What ``--overwrite`` would remove in ``folder`` (nothing is changed); raises ``error`` (one line naming
    the fix) when it would delete one of the ``protect``-ed files (the input files) or leave a run's name holding
    files no run listed."""
    folder = Path(folder)
    listed = read_manifest(folder) or set()
    plan = OverwritePlan(folder)
    files: set[Path] = set()
    dirs: set[Path] = set()
    for rel in listed:
        target = _inside(folder, rel.rstrip("/"))
        if target is None:
            continue
        for parent in list(target.relative_to(folder).parents)[:-1]:
            dirs.add(folder / parent)
        if rel.endswith("/"):
            if target.is_dir() and not target.is_symlink():
                dirs.add(target)
            continue
        for t in (target, part_path(target)):
            if os.path.lexists(t) and (t.is_symlink() or not t.is_dir()):
                files.add(t)
    guarded = {os.path.realpath(p): p for p in protect}
    for f in sorted(files):
        p = guarded.get(os.path.realpath(f))
        if p is not None:
            rel = f.relative_to(folder).as_posix()
            raise error(f"--source {p} is {rel}, an output of the earlier run in --out {folder} that --overwrite "
                        "would delete; copy the input elsewhere first or choose another --out")

    def removed(path: Path) -> bool:
        if path.is_symlink() or not path.is_dir():
            return path in files
        return path in dirs and all(removed(c) for c in path.iterdir())

    for entry in sorted(folder.iterdir()):
        if entry.name in _OWN or not is_run_output(entry.name) or removed(entry):
            continue
        if entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir()):
            continue  # an empty folder holds nothing to lose
        shown = entry.name + ("/" if entry.is_dir() else "")
        raise error(f"--out {folder} holds {shown}, which no earlier textsam-eus run there listed as its own "
                    f"({MANIFEST_NAME}); --overwrite replaces only a run's own outputs: move {shown} away or "
                    "choose another --out")
    plan.files, plan.dirs = sorted(files), sorted(dirs)
    return plan

"""The output folder of a run: checked before any work, locked while in use, never silently overwritten.

* ``--out`` must be a folder that can be created and written; a file, a read-only place or an over-long name is a
  one-line :class:`OutputError` naming the fix.
* A folder holding anything (earlier results, other files) is refused unless ``overwrite``; then exactly the files
  an earlier run listed as its own (``.textsam-eus.outputs``, :mod:`.manifest`) are removed first, so old and new
  masks never mix. Other files are left alone; the input is never removed; a run's name (``masks/``, ...) holding
  files no run listed is refused, before anything is removed.
* An exclusive lock (``.textsam-eus.lock``, ``fcntl.flock``) refuses a second run into the same folder; the
  kernel releases it when the process ends, however it ends. :func:`check_out_dir` looks at it too, so a command
  can refuse a folder in use before it loads a model.
* A reserve of disk space keeps room to finalise the outputs on a full disk: :meth:`OutputFolder.release_reserve`
  frees it when a write fails with ENOSPC. It is an unlinked file held open, so nothing is left in ``--out`` by a
  run however it ends (a ``.textsam-eus.reserve`` left by an earlier version is removed).

This module must stay free of torch and of the model / engine packages (it imports the torch-free ``core``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable

from ..core.errors import UserError
from .manifest import MANIFEST_NAME, RUN_OUTPUTS, Manifest, claim, plan_overwrite

__all__ = ["OutputError", "OutputFolder", "RUN_OUTPUTS", "MANIFEST_NAME", "check_out_dir", "claim", "is_disk_full"]

LOCK_NAME = ".textsam-eus.lock"
RESERVE_NAME = ".textsam-eus.reserve"  # the reserve's name while it is made (then unlinked, held open)
_OWN = (LOCK_NAME, RESERVE_NAME, MANIFEST_NAME)


class OutputError(UserError, ValueError):
    """The output folder cannot be used (the message names the fix)."""


def is_disk_full(exc: BaseException) -> bool:
    """True for an error caused by a full disk or quota (also through PyAV/FFmpeg errors)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _os_problem(path: Path, exc: OSError) -> OutputError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write to --out {path}: {exc.strerror.lower()}; choose a folder you can write to")
    if exc.errno == errno.ENAMETOOLONG:
        return OutputError(f"--out {str(path)[:60]}... is too long a name for this file system; choose a shorter "
                           "folder name")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"no space left for --out {path}; free some space or choose another folder")
    if exc.errno == errno.ENOTDIR:
        return OutputError(f"--out {path}: a part of the path is a file, not a folder; choose a folder path")
    return OutputError(f"cannot use --out {path}: {exc.strerror or exc}; choose another folder")


def _earlier_outputs(path: Path) -> list[str]:
    names = []
    for p in sorted(path.iterdir()):
        if p.name in _OWN:
            continue
        names.append(p.name + ("/" if p.is_dir() else ""))
    return names


def _check_unlocked(path: Path) -> None:
    """Refuse a folder another run holds the lock of (a shared lock is tried and released at once)."""
    import fcntl

    try:
        fd = os.open(path / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return  # no lock file: no run ever wrote here (or it cannot be read: open() will say why)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise OutputError(f"another textsam-eus run (pid {holder}) is writing to --out {path}; wait for it "
                              "to finish or choose another folder") from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_out_dir(path: str | os.PathLike, overwrite: bool = False, protect: Iterable[str | os.PathLike] = (),
                  *, check_lock: bool = True) -> Path:
    """Check ``path`` without changing anything: raise :class:`OutputError` when it cannot be used (a file, not
    writable, not empty without ``overwrite``, in use by another run, or ``overwrite`` would remove one of the
    ``protect``-ed input files or leave files no run listed under a run's name)."""
    path = Path(path)
    try:
        return _check(path, overwrite, list(protect), check_lock)
    except OSError as exc:
        raise _os_problem(path, exc) from None


def _check(path: Path, overwrite: bool, protect: list, check_lock: bool) -> Path:
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} is a file, not a folder; choose a folder path (it is created if missing)")
    if len(path.name.encode()) > 255:
        raise OutputError(f"--out {str(path)[:60]}... is too long a name for this file system; choose a shorter "
                          "folder name")
    if path.is_dir():
        if check_lock:
            _check_unlocked(path)
        found = _earlier_outputs(path)
        if found and not overwrite:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise OutputError(f"--out {path} is not empty (it holds {shown}); pass --overwrite to replace the results "
                              "of an earlier run, or choose another folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write to --out {path}: permission denied; choose a folder you can write to")
        if found:
            plan_overwrite(path, protect, error=OutputError)
    else:
        parent = next((p for p in path.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise OutputError(f"--out {path}: {parent} is a file, not a folder; choose a folder path")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot create --out {path}: {parent} is not writable; choose a folder you can "
                              "write to")
    return path


class OutputFolder:
    """Create, lock and (with ``overwrite``) clear a run's output folder; list the run's outputs while it is open
    (:func:`claim`). Use as a context manager. ``protect``: the input files, never removed."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, reserve_bytes: int = 4 << 20,
                 protect: Iterable[str | os.PathLike] = ()) -> None:
        self.protect = list(protect)
        self.path = check_out_dir(path, overwrite, self.protect)
        self.overwrite = overwrite
        self.reserve_bytes = int(reserve_bytes)
        self._lock_fd: int | None = None
        self._reserve_fd: int | None = None
        self.manifest = Manifest(self.path)
        self._before: set[str] = set()

    def __enter__(self) -> "OutputFolder":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        import fcntl

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _os_problem(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise OutputError(f"another textsam-eus run (pid {holder}) is writing to --out {self.path}; wait for it "
                              "to finish or choose another folder") from None
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            # again, now that no other run can write here
            check_out_dir(self.path, self.overwrite, self.protect, check_lock=False)
            if self.overwrite:
                plan_overwrite(self.path, self.protect, error=OutputError).execute()
            self._before = {p.name for p in self.path.iterdir() if p.name not in _OWN}
            self.manifest.open()
            self._make_reserve()
        except OSError as exc:
            self.close()
            raise _os_problem(self.path, exc) from None
        except BaseException:
            self.close()
            raise

    def _make_reserve(self) -> None:
        path = self.path / RESERVE_NAME
        if path.is_file() and not path.is_symlink():
            path.unlink()  # left by a killed run of an earlier version
        if self.reserve_bytes <= 0:
            return
        fd = None
        try:
            try:
                fd = os.open(self.path, os.O_TMPFILE | os.O_RDWR, 0o600)  # never has a name
            except (AttributeError, OSError):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                os.unlink(path)  # held open: the space stays reserved until closed, freed however the run ends
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
            except (AttributeError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                os.write(fd, b"\0" * self.reserve_bytes)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            raise _os_problem(self.path, exc) from None
        self._reserve_fd = fd

    def release_reserve(self) -> None:
        """Free the reserved space (on a full disk, to make room for finalising the outputs)."""
        fd, self._reserve_fd = self._reserve_fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        self.release_reserve()
        if self.manifest is not None and self._lock_fd is not None:
            try:
                self.manifest.sweep(self._before)
            except OSError:
                pass  # a full disk: the writers claimed their files before writing them
            self.manifest.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock; the (empty-pid) lock file stays, harmless
            self._lock_fd = None

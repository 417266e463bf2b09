"""The output folder of a run: checked before any work, locked while in use, never silently overwritten.

* ``--out`` must be a folder that can be created and written; a file, a read-only place or an over-long name is a
  one-line :class:`OutputError` naming the fix.
* A folder holding anything (earlier results, other files) is refused unless ``overwrite``; then the outputs of
  the earlier run (the names in :data:`RUN_OUTPUTS`) are removed first, so old and new masks never mix. Other
  files are left alone.
* An exclusive lock (``.textsam-eus.lock``, ``fcntl.flock``) refuses a second run into the same folder; the
  kernel releases it when the process ends, however it ends.
* A small reserve file keeps room to finalise the outputs on a full disk: :meth:`OutputFolder.release_reserve`
  frees it when a write fails with ENOSPC.

This module must stay free of torch and of the engine packages (of ``model`` it imports only the torch-free
errors module).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..model.errors import UserError

__all__ = ["OutputError", "OutputFolder", "RUN_OUTPUTS", "check_out_dir", "is_disk_full"]

LOCK_NAME = ".textsam-eus.lock"
RESERVE_NAME = ".textsam-eus.reserve"
# what a run writes; removed by overwrite=True (masks_seg*.mkv, *.part are matched by prefix/suffix)
RUN_OUTPUTS = ("overlay.mp4", "masks", "masks.mkv", "overlays", "latency.json", "latency.csv", "frames.jsonl",
               "summary.json", "outputs.csv", "masks.nii.gz", "masks_coco.json", "dicom", "report.html")


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
        if p.name in (LOCK_NAME, RESERVE_NAME):
            continue
        names.append(p.name + ("/" if p.is_dir() else ""))
    return names


def _is_run_output(name: str) -> bool:
    return name in RUN_OUTPUTS or name.endswith(".part") or (name.startswith("masks_seg") and
                                                             name.endswith((".mkv", ".nii.gz")))


def check_out_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check ``path`` without changing anything: raise :class:`OutputError` when it cannot be used."""
    path = Path(path)
    try:
        return _check(path, overwrite)
    except OSError as exc:
        raise _os_problem(path, exc) from None


def _check(path: Path, overwrite: bool) -> Path:
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} is a file, not a folder; choose a folder path (it is created if missing)")
    if len(path.name.encode()) > 255:
        raise OutputError(f"--out {str(path)[:60]}... is too long a name for this file system; choose a shorter "
                          "folder name")
    if path.is_dir():
        found = _earlier_outputs(path)
        if found and not overwrite:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise OutputError(f"--out {path} is not empty (it holds {shown}); pass --overwrite to replace the results "
                              "of an earlier run, or choose another folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write to --out {path}: permission denied; choose a folder you can write to")
    else:
        parent = next((p for p in path.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise OutputError(f"--out {path}: {parent} is a file, not a folder; choose a folder path")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot create --out {path}: {parent} is not writable; choose a folder you can "
                              "write to")
    return path


class OutputFolder:
    """Create, lock and (with ``overwrite``) clear a run's output folder. Use as a context manager."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, reserve_bytes: int = 4 << 20) -> None:
        self.path = check_out_dir(path, overwrite)
        self.overwrite = overwrite
        self.reserve_bytes = int(reserve_bytes)
        self._lock_fd: int | None = None

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
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        check_out_dir(self.path, self.overwrite)  # again, now that no other run can write here
        if self.overwrite:
            self._remove_earlier_outputs()
        self._make_reserve()

    def _remove_earlier_outputs(self) -> None:
        for p in self.path.iterdir():
            if not _is_run_output(p.name):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def _make_reserve(self) -> None:
        if self.reserve_bytes <= 0:
            return
        path = self.path / RESERVE_NAME
        try:
            with open(path, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, self.reserve_bytes)
                except (AttributeError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    f.write(b"\0" * self.reserve_bytes)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise _os_problem(self.path, exc) from None

    def release_reserve(self) -> None:
        """Free the reserve file (on a full disk, to make room for finalising the outputs)."""
        (self.path / RESERVE_NAME).unlink(missing_ok=True)

    def close(self) -> None:
        self.release_reserve()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock; the (empty-pid) lock file stays, harmless
            self._lock_fd = None

"""File safety: the one atomic write. A file is written whole at a temporary name beside it, then renamed over it.

Readers (and a run that resumes after a kill) see the old file or the whole new one, never a part. The temporary
is ``<name>.part`` in the same folder (one naming style everywhere: ``stream``'s list of a run's outputs covers a
claimed file's ``.part``; ``train`` removes an earlier run's ``.part`` files). The steps: write, flush, ``fsync``
the file (``sync=True``, the default: the content is on disk before the name points at it, also after a power
loss), ``os.replace``. On an error the temporary is removed and the old file stays (an :class:`AtomicFile`
that a sink keeps open leaves its ``.part`` to the sink).

* :func:`write_text_atomic` / :func:`write_bytes_atomic`: a whole text (UTF-8) or bytes at once.
* :func:`atomic_open`: a context manager for writers that stream into a file object (CSV, JSON written row by
  row, ``torch.save``); :class:`AtomicFile` is the same kept open across calls (a sink finalised at its close).
* :func:`atomic_path`: a context manager for writers that take a file name (safetensors, pydicom).

``sync=False`` is for the per-frame files of a stream (one PNG or DICOM instance per frame): a rename alone keeps
them whole after a kill, and an ``fsync`` each (milliseconds on a VM disk) would slow the write stage.

Standard library only; no imports of ours: every layer may import it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator

__all__ = ["PART_SUFFIX", "part_path", "AtomicFile", "atomic_open", "atomic_path", "write_text_atomic",
           "write_bytes_atomic"]

PART_SUFFIX = ".part"


def part_path(path: str | os.PathLike) -> Path:
    """The temporary name of ``path`` while it is written: ``<name>.part`` beside it."""
    path = Path(path)
    return path.with_name(path.name + PART_SUFFIX)


def _prepare(path: str | os.PathLike, parents: bool) -> Path:
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """``path`` being written at its ``.part`` (``file``); :meth:`commit` puts it in place, :meth:`discard` drops it.

    As a context manager it yields ``file`` and commits when the block ends normally; on an exception, in the block
    or in the commit, it discards.
    ``mode`` and ``open_kwargs`` are :func:`open`'s (``"w"`` text by default; ``"wb"``, ``"w+"``, ...).
    ``parents``: create missing parent folders first.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w", *, sync: bool = True, parents: bool = False,
                 **open_kwargs) -> None:
        self.path = _prepare(path, parents)
        self.part = part_path(self.path)
        self.sync = sync
        self.file: IO = open(self.part, mode, **open_kwargs)

    def commit(self) -> Path:
        """Flush, sync (``sync=True``), close and rename the ``.part`` over ``path``. On an error the ``.part`` is
        left for the caller (:meth:`discard` removes it; a sink may keep it as the record of an unfinished run)."""
        if not self.file.closed:
            self.file.flush()
            if self.sync:
                os.fsync(self.file.fileno())
            self.file.close()
        os.replace(self.part, self.path)
        return self.path

    def discard(self) -> None:
        """Close and remove the ``.part``; ``path`` keeps what it held."""
        with contextlib.suppress(OSError):
            self.file.close()
        self.part.unlink(missing_ok=True)

    def __enter__(self) -> IO:
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise


def atomic_open(path: str | os.PathLike, mode: str = "w", *, sync: bool = True, parents: bool = False,
                **open_kwargs) -> AtomicFile:
    """``with atomic_open(path, "w", encoding="utf-8") as f: ...``: ``f`` writes ``path``'s ``.part``, put in place
    when the block ends (see :class:`AtomicFile`)."""
    return AtomicFile(path, mode, sync=sync, parents=parents, **open_kwargs)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, sync: bool = True, parents: bool = False) -> Iterator[Path]:
    """``with atomic_path(path) as part: save(part)``: for writers that take a file name. When the block ends the
    file at ``part`` is synced (``sync=True``) and renamed over ``path``; on an exception it is removed."""
    path = _prepare(path, parents)
    part = part_path(path)
    try:
        yield part
        if sync:
            _sync_file(part)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes | bytearray | memoryview, *, sync: bool = True,
                       parents: bool = False) -> Path:
    """Put ``data`` (any bytes-like object, e.g. an encoded image buffer) at ``path`` atomically."""
    with atomic_open(path, "wb", sync=sync, parents=parents) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, sync: bool = True, parents: bool = False) -> Path:
    """Put ``text`` (UTF-8) at ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8", sync=sync, parents=parents) as f:
        f.write(text)
    return Path(path)

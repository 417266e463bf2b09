"""The one file hash: SHA-256 of a file's bytes, read in 1 MiB chunks (checkpoints, graphs and recordings can be large).

What it names: the checkpoint a run used (``summary.json``'s model, DICOM SEG, COCO), every graph and plan of a
bundle (``bundle.json``'s ``hashes``, checked at load), the checkpoint a model server serves, the engine cache's
key, an archive examination's input. Hashes of other things (a mask's pixels in ``eval``, a bundle's model id over
its graphs' hashes) are other facts and stay with them.

Standard library only; no imports of ours: every layer may import it.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]

CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path``, as 64 lowercase hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()

"""The model identity that outputs name as their algorithm: ``{"name", "checkpoint", "sha256"}``.

``summary.json``'s ``model``, the DICOM SEG's algorithm identification, the COCO file's ``info.model`` and the
archive table all carry it. ``name`` is ``"TextSAM-EUS <preset>"`` (the preset from the engine's ``info()``);
``checkpoint`` and ``sha256`` name the file the weights came from (a checkpoint, or a bundle's ``bundle.json``, which
holds the SHA-256 of every graph and plan), or are ``None`` when the caller knows no file (a library user's engine).
Which file a command's options mean is the command's business (``runs/identity.py: model_file``).

Standard library only (the engine is duck-typed); no imports of ours but :mod:`.hashing`: every layer may import it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .hashing import file_sha256

__all__ = ["MODEL_NAME", "model_name", "model_identity"]

MODEL_NAME = "TextSAM-EUS"


def model_name(preset: str | None) -> str:
    """``"TextSAM-EUS vit_b"``; ``"TextSAM-EUS"`` without a preset."""
    return MODEL_NAME + (f" {preset}" if preset else "")


def model_identity(engine: Any, file: str | os.PathLike | None = None, label: str | None = None) -> dict:
    """``{"name": model_name(preset), "checkpoint": label, "sha256": hex}`` for ``engine`` (anything with an
    ``info()`` dict holding ``"preset"``, or without one). ``file``: the weights' file, hashed when it exists (else
    ``sha256`` is ``None``); ``label``: how outputs show it (default: the file's name)."""
    info = (engine.info() if hasattr(engine, "info") else None) or {}
    path = Path(file) if file is not None else None
    shown = label if label is not None else (path.name if path is not None else None)
    return {"name": model_name(info.get("preset")), "checkpoint": shown,
            "sha256": file_sha256(path) if path is not None and path.is_file() else None}

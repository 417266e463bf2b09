"""The files a command reads, so that none of its outputs can replace one (:func:`..train.outputs.check_not_inputs`).

``eval --checkpoint run/best.safetensors --json run/best.safetensors --overwrite`` would otherwise replace the
checkpoint with the results; each command gathers its inputs here and checks them before any work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def checkpoint_inputs(value: str | os.PathLike | None, flag: str = "--checkpoint") -> dict[str, list[str]]:
    """flag -> the checkpoint file (``demo``: the shipped one) and the base weights its config names (the SAM
    checkpoint file, the BiomedCLIP folder's files). A missing or damaged checkpoint gives only its path here: the
    command's own checkpoint check reports it."""
    from ..core.errors import UserError
    from ..model.checkpoint import demo_checkpoint_path, read_checkpoint_meta

    if not value:
        return {}
    path = demo_checkpoint_path() if str(value) == "demo" else Path(value)
    found = {flag: [str(path)]}
    try:
        cfg = read_checkpoint_meta(path)["config"]
    except UserError:
        return found
    bases = []
    if isinstance(cfg.get("sam_checkpoint"), str):
        bases.append(cfg["sam_checkpoint"])
    if isinstance(cfg.get("biomedclip_dir"), str):
        bases += folder_files(cfg["biomedclip_dir"])
    if bases:
        found[f"base weights of {flag}"] = bases
    return found


def folder_files(folder: str | os.PathLike | None) -> list[str]:
    """The files directly inside ``folder`` (none when it is not a folder)."""
    if not folder or not os.path.isdir(folder):
        return []
    return [str(p) for p in Path(folder).iterdir() if p.is_file()]


def paths(values: Iterable | None) -> list[str]:
    return [os.fspath(v) for v in (values or []) if v]

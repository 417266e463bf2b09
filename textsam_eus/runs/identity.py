"""Which file names the model of a command's ``--checkpoint`` / ``--bundle`` (for :mod:`textsam_eus.core.identity`)."""

from __future__ import annotations

from pathlib import Path


def model_file(checkpoint: str | None, bundle: str | None) -> tuple[Path, str]:
    """(file, label): the checkpoint file (``'demo'`` and names resolved), or with ``bundle`` its ``bundle.json``
    (which holds the SHA-256 of every graph and plan), labelled ``<bundle folder>/bundle.json``."""
    from ..model.checkpoint import resolve_checkpoint

    if bundle:
        return Path(bundle) / "bundle.json", f"{Path(bundle).name}/bundle.json"
    path = resolve_checkpoint(checkpoint or "demo")
    return path, path.name

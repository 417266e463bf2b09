"""The model's identity for the outputs that name their algorithm (DICOM SEG, COCO): name, file and SHA-256."""

from __future__ import annotations

from pathlib import Path

from ..model.bundle import sha256


def model_identity(checkpoint: str | None, bundle: str | None, engine) -> dict:
    """``{"name": "TextSAM-EUS <preset>", "checkpoint": file name, "sha256": hex}``: the checkpoint file's hash, or
    with ``bundle`` the hash of its ``bundle.json`` (which holds the SHA-256 of every graph and plan)."""
    from ..model.checkpoint import resolve_checkpoint

    preset = (engine.info() or {}).get("preset")
    path = Path(bundle) / "bundle.json" if bundle else resolve_checkpoint(checkpoint or "demo")
    return {"name": "TextSAM-EUS" + (f" {preset}" if preset else ""), "checkpoint": path.name if not bundle
            else f"{Path(bundle).name}/bundle.json", "sha256": sha256(path) if path.is_file() else None}

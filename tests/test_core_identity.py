"""The one file hash (core/hashing.py) and the one model identity (core/identity.py)."""

from __future__ import annotations

import hashlib

from textsam_eus.core.hashing import CHUNK, file_sha256
from textsam_eus.core.identity import model_identity, model_name


class _Engine:
    def __init__(self, info):
        self._info = info

    def info(self):
        return self._info


def test_file_sha256_streams_any_size(tmp_path):
    for size in (0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 7):
        data = bytes(i % 251 for i in range(size))
        (tmp_path / "f").write_bytes(data)
        assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(tmp_path / "f")) == file_sha256(tmp_path / "f")


def test_model_identity_names_the_preset_and_the_file(tmp_path):
    assert model_name("vit_b") == "TextSAM-EUS vit_b" and model_name(None) == "TextSAM-EUS"
    assert model_identity(_Engine({"preset": "tiny"})) == {"name": "TextSAM-EUS tiny", "checkpoint": None,
                                                           "sha256": None}
    assert model_identity(object()) == {"name": "TextSAM-EUS", "checkpoint": None, "sha256": None}  # no info()
    assert model_identity(_Engine(None))["name"] == "TextSAM-EUS"
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"weights")
    got = model_identity(_Engine({"preset": "vit_b"}), ckpt)
    assert got == {"name": "TextSAM-EUS vit_b", "checkpoint": "m.safetensors",
                   "sha256": hashlib.sha256(b"weights").hexdigest()}
    bundle = model_identity(_Engine({}), tmp_path / "b" / "bundle.json", "b/bundle.json")
    assert bundle == {"name": "TextSAM-EUS", "checkpoint": "b/bundle.json", "sha256": None}  # not there: no hash


def test_model_file_of_the_command_options(tmp_path):
    from textsam_eus.runs.identity import model_file

    (tmp_path / "b").mkdir()
    assert model_file(None, str(tmp_path / "b")) == (tmp_path / "b" / "bundle.json", "b/bundle.json")
    path, label = model_file("demo", None)
    assert path.is_file() and label == path.name and path.suffix == ".safetensors"
    assert model_file(None, None) == (path, label)  # no option: the demo model

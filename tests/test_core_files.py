"""The one atomic write (core/files.py): whole files or none, one temporary name (``<name>.part``), synced."""

from __future__ import annotations

import os

import pytest

from textsam_eus.core import files
from textsam_eus.core.files import (AtomicFile, atomic_open, atomic_path, part_path, write_bytes_atomic,
                                    write_text_atomic)


@pytest.fixture
def fsyncs(monkeypatch):
    """The file descriptors os.fsync was called with (still calling it)."""
    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append(fd)
        real(fd)
    monkeypatch.setattr(files.os, "fsync", fsync)
    return calls


def test_part_path_is_beside_the_target(tmp_path):
    assert part_path(tmp_path / "a" / "r.json") == tmp_path / "a" / "r.json.part"
    assert part_path("x.png").name == "x.png.part"


def test_text_and_bytes_are_written_whole_and_synced(tmp_path, fsyncs):
    target = tmp_path / "r.json"
    target.write_text("old")
    assert write_text_atomic(target, "new é") == target
    assert target.read_text(encoding="utf-8") == "new é" and len(fsyncs) == 1
    assert write_bytes_atomic(tmp_path / "b.bin", bytearray(b"\x00\x01")) == tmp_path / "b.bin"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01" and len(fsyncs) == 2
    write_bytes_atomic(tmp_path / "c.bin", memoryview(b"abc"), sync=False)
    assert (tmp_path / "c.bin").read_bytes() == b"abc" and len(fsyncs) == 2  # not synced when asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "c.bin", "r.json"]


def test_missing_folders_only_when_asked(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_text_atomic(tmp_path / "new" / "r.json", "x")
    assert not (tmp_path / "new").exists()
    write_text_atomic(tmp_path / "new" / "r.json", "x", parents=True)
    assert (tmp_path / "new" / "r.json").read_text() == "x"


def test_a_failing_writer_leaves_the_old_file_and_no_part(tmp_path):
    target = tmp_path / "log.csv"
    target.write_text("the earlier log")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(target, "w", newline="") as f:
            f.write("half of a new log")
            assert part_path(target).exists() and target.read_text() == "the earlier log"
            raise RuntimeError("disk on fire")
    assert target.read_text() == "the earlier log" and not part_path(target).exists()
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as part:
            part.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "the earlier log" and not part.exists()


def test_a_failing_rename_removes_the_part(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("keep")  # os.replace cannot put a file over a non-empty folder
    with pytest.raises(OSError):
        write_text_atomic(target, "x")
    assert not part_path(target).exists() and (target / "inside").read_text() == "keep"


def test_atomic_path_for_writers_that_take_a_file_name(tmp_path, fsyncs):
    target = tmp_path / "m.safetensors"
    with atomic_path(target) as part:
        assert part == part_path(target)
        part.write_bytes(b"weights")
        assert not target.exists()
    assert target.read_bytes() == b"weights" and not part.exists() and len(fsyncs) == 1


def test_an_atomic_file_kept_open_is_put_in_place_at_commit(tmp_path, fsyncs):
    target = tmp_path / "masks_coco.json"
    a = AtomicFile(target, "w", encoding="utf-8")
    a.file.write("[1,")
    a.file.write("2]")
    assert not target.exists() and a.part.exists()
    assert a.commit() == target and target.read_text() == "[1,2]" and not a.part.exists() and len(fsyncs) == 1
    b = AtomicFile(target, "w")
    b.file.write("another")
    b.discard()
    assert target.read_text() == "[1,2]" and not b.part.exists()


def test_a_failed_commit_leaves_the_part_to_its_owner(tmp_path):
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "x").write_text("keep")
    a = AtomicFile(folder, "w")  # renaming over a non-empty folder fails
    a.file.write("the frames so far")
    with pytest.raises(OSError):
        a.commit()
    assert a.part.read_text() == "the frames so far"  # a sink may keep it as the record of the unfinished run
    a.discard()
    assert not a.part.exists()

"""The archive table: one row per examination, in ``archive.csv``, ``archive.json`` and ``archive.html`` under
``--out``, rewritten (temporary name, then rename) after every examination, so it is whole whatever stops the run.

``archive.json`` also records the settings that shape the outputs and the model's hash; a later run into the same
``--out`` reads it back (:meth:`ArchiveTable.open`): with other settings or another model it is refused (runs never
mix), with the same ones each examination recorded as done is skipped when its input is unchanged. An exclusive
lock (``.textsam-eus-archive.lock``, ``fcntl.flock``) refuses a second run into the same folder while one runs.

Free of torch and Ray.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from ..stream.outdir import check_out_dir
from ..stream.sinks.report import write_json_atomic, write_text_atomic
from .plan import ArchiveError, Examination

__all__ = ["ArchiveTable", "COLUMNS", "STATUSES", "TABLE_NAMES"]

FORMAT = "textsam-eus-archive"
VERSION = 1
LOCK_NAME = ".textsam-eus-archive.lock"
TABLE_NAMES = ("archive.csv", "archive.json", "archive.html")
STATUSES = ("done", "skipped", "failed", "incomplete")
COLUMNS = ("source", "status", "frames", "fps", "speed_fps", "presence_shown", "presence_max", "mask_frames",
           "mask_area_mean", "mask_area_min", "mask_area_max", "output", "report", "model_sha256", "input_sha256",
           "input_bytes", "wall_s", "worker", "worker_rss_mb", "reason", "notes")
RESULT_COLUMNS = ("frames", "fps", "speed_fps", "presence_shown", "presence_max", "mask_frames", "mask_area_mean",
                  "mask_area_min", "mask_area_max", "report", "model_sha256", "input_sha256", "wall_s", "worker",
                  "worker_rss_mb")


class ArchiveTable:
    """The rows of one run into ``out`` (by output folder name, in the archive's order), and those an earlier run
    left there (:attr:`previous`)."""

    def __init__(self, out: Path, settings: dict[str, Any]) -> None:
        self.out = Path(out)
        self.settings = dict(settings)
        self.rows: dict[str, dict[str, Any]] = {}
        self.previous: dict[str, dict[str, Any]] = {}
        self.previous_model: dict | None = None
        self.model: dict | None = None
        self.run: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, out: str | os.PathLike, settings: dict[str, Any]) -> "ArchiveTable":
        """Check ``out`` (a new or empty folder, or the ``--out`` of an earlier run with the same settings), lock it
        and read what an earlier run left. Raises :class:`ArchiveError` / ``OutputError`` naming the fix."""
        table = cls(Path(out), settings)
        if table.out.is_dir():
            table._check_is_archive()  # before the lock file: a folder that is not ours stays as it was
        check_out_dir(table.out, overwrite=True)  # a file, an unwritable place, an over-long name: one-line errors
        table.out.mkdir(parents=True, exist_ok=True)
        table._lock()
        try:
            table._read_previous()
        except BaseException:
            table.close()
            raise
        return table

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ArchiveError(f"another textsam-eus annotate run (pid {holder}) is writing to --out {self.out}; wait "
                               "for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _check_is_archive(self) -> None:
        if (self.out / "archive.json").exists():
            return
        others = sorted(p.name for p in self.out.iterdir() if p.name != LOCK_NAME and not p.name.endswith(".part"))
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise ArchiveError(f"--out {self.out} holds files that are not an annotate run ({shown}); choose a new "
                               "or empty folder (or the --out of an earlier annotate run, to resume it)")

    def _read_previous(self) -> None:
        path = self.out / "archive.json"
        self._check_is_archive()
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
        except (OSError, ValueError, AttributeError) as exc:
            raise ArchiveError(f"--out {self.out}: cannot read archive.json of the earlier run ({exc}); choose another "
                               "folder, or move archive.json away to start this one over") from None
        before = data.get("settings") or {}
        changed = sorted(k for k in set(before) | set(self.settings) if before.get(k) != self.settings.get(k))
        if changed:
            diff = "; ".join(f"{k}: {before.get(k)!r} then, {self.settings.get(k)!r} now" for k in changed[:4])
            raise ArchiveError(f"--out {self.out} holds an archive annotated with other settings ({diff}); rerun with "
                               "the same options to resume it, or choose another --out")
        self.previous_model = data.get("model")
        self.previous = {r["output"]: r for r in data.get("examinations", []) if r.get("output")}

    def check_model(self, model: dict) -> None:
        """Refuse a model other than the one the earlier run's examinations were annotated with."""
        self.model = dict(model)
        before = (self.previous_model or {}).get("sha256")
        if before and before != model.get("sha256"):
            raise ArchiveError(f"--out {self.out} holds examinations annotated with another model (sha256 "
                               f"{before[:12]}..., this run's is {str(model.get('sha256'))[:12]}...); use the same "
                               "--checkpoint/--bundle to resume, or choose another --out")

    # ------------------------------------------------------------------ rows
    def add(self, exam: Examination) -> dict[str, Any]:
        """The row of ``exam``: its listing problem, or ``incomplete`` / "not started" until a result comes."""
        row = {c: None for c in COLUMNS}
        row.update(source=exam.source, output=exam.name or None, input_bytes=exam.size,
                   notes="; ".join(exam.notes) or None)
        if exam.problem:
            row.update(status=exam.status, reason=exam.problem)
        else:
            row.update(status="incomplete", reason="not started")
        self.rows[exam.name or f"#{len(self.rows)}"] = row
        return row

    def expected_hash(self, name: str) -> str | None:
        """The input's SHA-256 an earlier run recorded for a finished examination (None: annotate it)."""
        prev = self.previous.get(name)
        if prev and prev.get("status") in ("done", "skipped") and prev.get("input_sha256"):
            return prev["input_sha256"]
        return None

    def update(self, name: str, result: dict[str, Any]) -> dict[str, Any]:
        """Fill the row of ``name`` from a worker's result (status, reason, notes and the result columns); a skip
        keeps the numbers of the run that annotated it."""
        row = self.rows[name]
        if result.get("status") == "skipped":  # the numbers of the run that annotated it; this run only checked
            prev = self.previous.get(name, {})
            row.update({c: prev.get(c) for c in RESULT_COLUMNS})
            row["input_sha256"] = result.get("input_sha256") or row.get("input_sha256")
        else:
            row.update({c: result[c] for c in RESULT_COLUMNS if result.get(c) is not None})
        row["status"] = result["status"]
        row["reason"] = result.get("reason")
        notes = [n for n in ((row.get("notes") or "").split("; ") + list(result.get("notes") or [])) if n]
        row["notes"] = "; ".join(dict.fromkeys(notes)) or None
        return row

    def mark_unfinished(self, reason: str) -> None:
        """Every row still waiting for a result: ``incomplete`` with ``reason``."""
        for row in self.rows.values():
            if row["status"] == "incomplete" and row["reason"] == "not started":
                row["reason"] = reason

    def carry_over(self) -> None:
        """Rows of the earlier run that this run's sources no longer list: kept, with a note."""
        for name, prev in self.previous.items():
            if name not in self.rows:
                row = {c: prev.get(c) for c in COLUMNS}
                row["notes"] = "; ".join(n for n in (prev.get("notes"), "not among the sources of the latest run") if n)
                self.rows[name] = row

    def counts(self) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        for row in self.rows.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    # ------------------------------------------------------------------ writing
    def as_json(self) -> dict[str, Any]:
        rows = list(self.rows.values())
        return {"format": FORMAT, "version": VERSION, "settings": self.settings, "model": self.model,
                "run": self.run, "counts": self.counts(),
                "frames": sum(int(r.get("frames") or 0) for r in rows if r["status"] == "done"),
                "examinations": rows}

    def write(self) -> None:
        """``archive.json``, ``archive.csv`` and ``archive.html``, each whole (temporary name, then rename)."""
        from .report_html import archive_html

        data = self.as_json()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in data["examinations"]:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
        write_text_atomic(self.out / "archive.csv", buf.getvalue())
        write_text_atomic(self.out / "archive.html", archive_html(data))
        write_json_atomic(self.out / "archive.json", data)  # last: it is what a rerun reads

"""Which files an archive holds, and the output folder of each.

An archive is a folder (searched recursively; hidden files and folders and the output folder itself are left out)
or a CSV list with a ``source`` (or ``path``) column and an optional ``id`` column; relative paths in a list are
relative to the list's folder. Videos are found by extension (:data:`~textsam_eus.stream.base.VIDEO_EXTENSIONS`),
DICOM files by their content. Everything else found in a folder is listed too (status ``skipped``, with the
reason), so the archive table accounts for every file.

Output folders are unique by construction: :func:`exam_folder_name` maps the examination's key (its path relative
to the archive folder, the path as a list gives it, or the list's ``id``) one-to-one onto a file name, so
``clip.mp4``, ``clip.mkv`` and ``clip_mp4.mp4`` get three folders, and a folder's name never depends on which other
files the archive holds (adding a recording later never renames the outputs of the others: resume relies on it).

Free of torch and Ray.
"""

from __future__ import annotations

import csv
import hashlib
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..model.errors import UserError

__all__ = ["ArchiveError", "Examination", "exam_folder_name", "plan_archive", "MAX_NAME_BYTES"]

MAX_NAME_BYTES = 200  # output folder names stay well under the 255 bytes of common file systems
LIST_PATH_COLUMNS = ("source", "path", "file")


class ArchiveError(UserError, ValueError):
    """The archive (``--source``) or its output folder (``--out``) cannot be used; the message names the fix."""


@dataclass
class Examination:
    """One file of the archive: ``source`` (the path to open), ``key`` (what its folder name is made from),
    ``name`` (the output folder, under ``--out``), ``size`` in bytes; ``problem`` and ``status`` when it is listed
    but not annotated (not a video, missing, listed twice); ``notes`` for the table."""

    source: str
    key: str
    name: str
    size: int | None = None
    problem: str | None = None
    status: str | None = None  # "failed" / "skipped" for a listed-only file
    notes: list[str] = field(default_factory=list)


def exam_folder_name(key: str) -> str:
    """The output folder of the examination ``key`` (a relative path such as ``patient01/clip.mp4``, or an id).

    One-to-one: letters, digits, ``_``, ``-`` and ``.`` stay, every other byte of the UTF-8 key is written ``%XX``
    (RFC 3986 percent-encoding, ``urllib.parse.unquote`` gives the key back), a leading ``.`` too (no hidden
    folders). ``clip.mp4`` -> ``clip.mp4``, ``patient 1/clip.mkv`` -> ``patient%201%2Fclip.mkv``. A name longer
    than :data:`MAX_NAME_BYTES` is cut and ends with ``~`` and 16 hex digits of the key's SHA-256 (``~`` is
    otherwise always encoded, so a cut name never equals an uncut one).
    """
    if not key:
        raise ArchiveError("an examination needs a non-empty name (an empty id in the list?); give every row a file "
                           "path or id")
    name = urllib.parse.quote(key, safe="").replace("~", "%7E")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name) > MAX_NAME_BYTES:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        head = name[: MAX_NAME_BYTES - 17]
        if "%" in head[-2:]:  # do not cut an escape in two
            head = head[: head.rindex("%")]
        name = f"{head}~{digest}"
    return name


def _is_recording(path: Path) -> bool:
    from ..stream.base import VIDEO_EXTENSIONS
    from ..stream.sources.dicom import is_dicom_file

    ext = path.suffix.lower()
    return ext in VIDEO_EXTENSIONS or is_dicom_file(path)


def _same_file_key(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _walk(folder: Path, out: Path) -> list[tuple[str, Path]]:
    """(key, path) of every regular file under ``folder`` (sorted, hidden and ``out`` left out)."""
    found = []
    for root, dirs, files in os.walk(folder):
        root_p = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _inside(root_p / d, out))
        for f in sorted(files):
            p = root_p / f
            if f.startswith(".") or not p.is_file():
                continue
            found.append((p.relative_to(folder).as_posix(), p))
    return found


def _read_list(path: Path) -> list[tuple[str, Path, str | None]]:
    """(key, path, id) of the rows of a CSV list (a header with ``source``/``path``/``file``, optional ``id``; or
    one path per line without a header)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"--source {path}: cannot read the list ({exc}); give a readable CSV with a 'source' "
                           "column, or a folder") from None
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise ArchiveError(f"--source {path} lists no files; add a 'source' column with one path per row")
    header = [c.strip().lower() for c in rows[0]]
    col = next((header.index(c) for c in LIST_PATH_COLUMNS if c in header), None)
    id_col = header.index("id") if "id" in header else None
    if col is None:
        if len(header) > 1:
            raise ArchiveError(f"--source {path}: no 'source' column (columns: {', '.join(header)}); name the column "
                               "of file paths 'source'")
        col, body = 0, rows  # one path per line, no header
    else:
        body = rows[1:]
    out = []
    for r in body:
        given = r[col].strip() if col < len(r) else ""
        ident = r[id_col].strip() if id_col is not None and id_col < len(r) else None
        if not given:
            continue
        p = Path(given).expanduser()
        if not p.is_absolute():
            p = path.parent / p
        out.append((ident or Path(given).as_posix(), p, ident))
    return out


def plan_archive(spec: str, out: str | os.PathLike) -> list[Examination]:
    """Every file of the archive ``spec`` (a folder or a CSV list) as an :class:`Examination`, in a stable order."""
    src, out = Path(spec), Path(out)
    if not src.exists():
        raise ArchiveError(f"--source {spec} does not exist; give a folder of recordings or a CSV list of them")
    from_list = not src.is_dir()
    if src.is_dir():
        entries = [(k, p, None) for k, p in _walk(src, out)]
    elif src.suffix.lower() in (".csv", ".txt", ".tsv", ".lst"):
        entries = _read_list(src)
    else:
        raise ArchiveError(f"--source {spec} is a file, not a folder or a list; annotate one file with "
                           "`textsam-eus stream --source FILE`, or list the files in a CSV with a 'source' column")
    exams: list[Examination] = []
    seen_files: dict[tuple, str] = {}
    seen_names: dict[str, str] = {}
    by_stem: dict[str, list[Examination]] = {}
    for key, path, ident in entries:
        name = exam_folder_name(key)
        ex = Examination(source=str(path), key=key, name=name)
        try:
            ex.size = path.stat().st_size if path.is_file() else None
        except OSError:
            ex.size = None
        if name in seen_names:
            ex.problem, ex.status = f"listed twice (id or path {key!r} already given for {seen_names[name]})", "skipped"
            ex.name = ""
        elif not path.exists():
            ex.problem, ex.status = "file not found; correct the path in the list", "failed"
        elif path.is_dir():
            ex.problem, ex.status = "a folder, not a file; list its files, or give the folder as --source", "failed"
        elif _inside(path, out):
            ex.problem, ex.status = "inside --out (an output of an earlier run?); not annotated", "skipped"
        elif not from_list and not _is_recording(path):  # a list names its files: each is opened
            ex.problem, ex.status = (f"not a video or DICOM file (extension {path.suffix or 'none'!r}); not "
                                     "annotated"), "skipped"
        else:
            fid = _same_file_key(path)
            if fid is not None and fid in seen_files:
                ex.problem, ex.status = f"the same file as {seen_files[fid]}; annotated once", "skipped"
            elif fid is not None:
                seen_files[fid] = str(path)
        if ex.name:
            seen_names[name] = key
        if ex.problem is None:
            by_stem.setdefault(path.stem.lower(), []).append(ex)
        exams.append(ex)
    for group in by_stem.values():
        if len(group) > 1:
            for ex in group:
                others = ", ".join(Path(o.source).name for o in group if o is not ex)
                ex.notes.append(f"same stem as {others}: kept apart in its own folder {ex.name}")
    return exams

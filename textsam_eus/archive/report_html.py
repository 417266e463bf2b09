"""``archive.html``: the archive table as one static page (no scripts), linking each examination's ``report.html``
and output folder. Free of torch and Ray."""

from __future__ import annotations

import html
import urllib.parse
from typing import Any

__all__ = ["archive_html"]

SHOWN = (("status", "status"), ("frames", "frames"), ("fps", "fps"), ("presence_shown", "outline shown"),
         ("presence_max", "max presence"), ("mask_area_mean", "mean mask area (px)"), ("reason", "reason"),
         ("notes", "notes"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def archive_html(data: dict[str, Any]) -> str:
    """The page for ``data`` (what :meth:`~textsam_eus.archive.table.ArchiveTable.as_json` returns)."""
    counts = ", ".join(f"{n} {s}" for s, n in (data.get("counts") or {}).items() if n)
    model = data.get("model") or {}
    rows = []
    for r in data.get("examinations", []):
        name = r.get("output")
        href = urllib.parse.quote(name) if name else None  # folder names hold %XX escapes themselves
        source = html.escape(str(r.get("source") or ""))
        if href and r.get("report"):
            link = f'<a href="{href}/{urllib.parse.quote(r["report"])}">report</a> <a href="{href}/">folder</a>'
        elif href and r.get("status") in ("done", "skipped", "incomplete"):
            link = f'<a href="{href}/">folder</a>'
        else:
            link = ""
        cells = "".join(f"<td>{_cell(r.get(k))}</td>" for k, _ in SHOWN)
        rows.append(f'<tr class="{html.escape(str(r.get("status")))}"><td>{source}</td>{cells}<td>{link}</td></tr>')
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in SHOWN)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TextSAM-EUS archive</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:90%}}
td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}}
tr.failed td{{background:#fde8e8}}tr.incomplete td{{background:#fff6dd}}tr.skipped td{{color:#555}}</style>
</head><body>
<h1>Archive: {len(data.get("examinations", []))} examinations</h1>
<p>{html.escape(counts)}; {int(data.get("frames") or 0)} frames annotated.
Model: {html.escape(str(model.get("name") or "?"))} ({html.escape(str(model.get("checkpoint") or ""))},
sha256 {html.escape(str(model.get("sha256") or "?"))}). The same table: <a href="archive.csv">archive.csv</a>,
<a href="archive.json">archive.json</a>.</p>
<table><thead><tr><th>source</th>{head}<th>outputs</th></tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""

"""report.html: the sample strip shows the outline when the run had one; legends never cover the curves."""

from __future__ import annotations

import numpy as np

from textsam_eus.stream.record import FrameRecord
from textsam_eus.stream.sinks.report_html import ThumbnailSink, _legend_outside, write_report_html


def _run(sink, n, outlined):
    img = np.zeros((12, 16, 3), np.uint8)
    for i in range(n):
        rec = FrameRecord(i, None, 0.0, None, "x")
        rec.overlay = img
        rec.mask = np.zeros((12, 16), bool)
        if i in outlined:
            rec.mask[3:6, 4:8] = True
        sink.write(rec)


def test_the_strip_includes_the_few_frames_with_an_outline(tmp_path):
    sink = ThumbnailSink(n=6, width=16)
    _run(sink, 50, {34, 35})  # as on cancer_v1: the outline on two frames only
    picked = [i for i, _ in sink.sample()]
    assert len(picked) == 6 and picked == sorted(picked) and picked[0] == 0 and picked[-1] == 49
    assert {34, 35} <= set(picked) and sink.shown(34) and not sink.shown(0)
    write_report_html(tmp_path, {"frames_out": 50}, sink)
    page = (tmp_path / "report.html").read_text()
    assert "An outline was shown on 2 of 50 frames" in page and page.count("outline shown</b></figcaption>") == 2


def test_the_strip_says_when_nothing_was_shown(tmp_path):
    sink = ThumbnailSink(n=4, width=16)
    _run(sink, 30, set())
    assert len(sink.sample()) == 4
    write_report_html(tmp_path, {"frames_out": 30}, sink)
    assert "No outline was shown on any of the 30 frames" in (tmp_path / "report.html").read_text()


def test_many_outlined_frames_stay_few_thumbnails():
    sink = ThumbnailSink(n=6, width=16)
    _run(sink, 3000, set(range(1000, 3000)))
    picked = sink.sample()
    assert len(picked) == 6 and len(sink.outlined.items) < 12 and len(sink.all.items) < 12
    assert sum(sink.shown(i) for i, _ in picked) == 3


def test_legends_sit_outside_the_plot():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.2))
    ax = fig.add_subplot()
    ax.plot(np.arange(100), np.linspace(0, 300, 100), label="capture to overlay")
    ax.axhline(250, label="p99")
    _legend_outside(ax, fontsize=8)
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes: over no data point

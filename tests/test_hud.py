"""The HUD: model time for files, capture-to-overlay latency for live sources, placed where the screen is quiet."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_data
from fakes import FakeEngine, SyntheticSource

import textsam_eus.stream.stages.draw as pipeline_mod  # the draw stage draws the overlay
from textsam_eus.stream.overlay import OverlayStyle, draw_overlay, hud_box_size, quiet_corner
from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline


def _screen():
    """An 800x600 'scanner screen': text at the top left, a scale at the top right, a pictogram at the bottom left."""
    img = np.zeros((600, 800, 3), np.uint8)
    img[10:60, 10:200] = 230
    img[10:70, 640:790:6] = 255
    img[520:590, 10:120] = 180
    img[100:500, 150:650] = np.random.default_rng(0).integers(40, 120, (400, 500, 3))  # the image sector
    return img


def test_quiet_corner_avoids_the_scanner_graphics():
    size = hud_box_size(["onnxruntime | 30 fps", "model 20 ms | IoU 0.90", "tumour? (presence 0.00)"],
                        OverlayStyle())
    x, y = quiet_corner(_screen(), size)
    assert (x, y) == (800 - 4 - size[0], 600 - 4 - size[1])  # bottom right: the only empty corner
    blank = np.zeros((600, 800, 3), np.uint8)
    assert quiet_corner(blank, size) == (4, 4)  # nothing anywhere: the usual top-left


def test_hud_box_is_drawn_where_asked_on_a_dark_backing():
    img = np.full((120, 200, 3), 200, np.uint8)
    out = draw_overlay(img, None, OverlayStyle(), ["model 12 ms"], hud_at=(100, 80))
    assert np.array_equal(out[:60, :90], img[:60, :90])  # the top left is untouched
    box = out[82:110, 102:190]
    assert box.max() == 255 and np.median(box) < 60  # white text on a near-black box


def test_on_a_real_eus_screen_the_hud_covers_no_scanner_graphics():
    import av

    with av.open(str(shared_data("eus_clips", "cancer_v1.mp4"))) as c:  # skipped without ../shared/data
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    size = hud_box_size(["onnxruntime | 30 fps", "model 20 ms | IoU 0.90", "tumour? (presence 0.00)"],
                        OverlayStyle())
    x, y = quiet_corner(frame, size)
    box = frame[y:y + size[1], x:x + size[0]]
    top_left = frame[4:4 + size[1], 4:4 + size[0]]  # this scanner's scale bar and tick marks reach into it
    assert (box > 100).mean() < 0.001 and (box > 100).mean() <= (top_left > 100).mean()
    assert (x, y) != (4, 4)


def _hud_texts(monkeypatch, source):
    seen = []
    real = pipeline_mod.draw_overlay

    def spy(image, mask, style, hud, faded=False, hud_at=None):
        seen.append((list(hud), hud_at))
        return real(image, mask, style, hud, faded=faded, hud_at=hud_at)

    monkeypatch.setattr(pipeline_mod, "draw_overlay", spy)
    return seen


@pytest.mark.parametrize("live", [False, True])
def test_file_runs_show_the_model_time_live_runs_the_latency(tmp_path, monkeypatch, live):
    src = SyntheticSource(4, lambda i: np.full((48, 64, 3), 30, np.uint8), fps=30.0, live=live)
    seen = _hud_texts(monkeypatch, src)
    summary = StreamPipeline(FakeEngine(), src, tmp_path, PipelineConfig(masks="none")).run()
    assert seen and all(len({at for _, at in seen}) == 1 for _ in [0])  # one place for the whole run
    lines = [hud[1] for hud, _ in seen]
    word = "latency" if live else "model"
    assert all(line.startswith(word + " ") and line.endswith("ms | IoU 0.90") for line in lines)
    assert summary["hud_timing"]["shown"] == word

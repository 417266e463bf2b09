"""The EUS screen layout (``--roi auto``): the imaging sector on real screens and phantom screens, tracking, and
masks that never leave the sector."""

from __future__ import annotations

import csv

import av
import cv2
import numpy as np
import pytest
from conftest import shared_data
from fakes import FakeEngine, SyntheticSource

from textsam_eus.common.phantom import PhantomClip, PhantomConfig, fan_mask
from textsam_eus.common.screen import LayoutTracker
from textsam_eus.model.mask_metrics import mask_iou
from textsam_eus.model.refine import SegmentResult
from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
from textsam_eus.stream.sources import VideoFileSource


def _frames(name):
    with av.open(str(shared_data("eus_clips", f"{name}.mp4"))) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _track(frames):
    tr = LayoutTracker()
    return tr, [tr.update(f) for f in frames]


def test_single_fan_on_a_real_screen():
    tr, layouts = _track(_frames("healthy_v2"))
    assert all(lay is not None and lay.kind == "single" for lay in layouts)
    lay = layouts[-1]
    m = lay.mask
    assert m[350, 400] == 1  # the middle of the image
    assert m[5, 5] == 0 and m[595, 795] == 0 and m[300, 790] == 0  # screen corners, the depth scale
    assert m[60, 400] == 0  # the transducer's dome above the near field
    assert 0.25 < m.mean() < 0.6
    assert tr.changes == 0


def test_dual_panel_view_picks_the_bmode_panel():
    _, layouts = _track(_frames("cancer_v2"))
    lay = layouts[-1]
    assert lay.kind == "dual" and len(lay.panels) == 2
    x, y, w, h = lay.bbox
    assert x >= 395 and x + w <= 800  # the right panel (B-mode), not the elastography panel on the left
    assert lay.mask[:, :390].sum() == 0


def test_colour_doppler_box_is_found_inside_the_sector():
    _, layouts = _track(_frames("cancer_v1"))
    assert layouts[10].doppler_box is None  # B-mode
    lay = layouts[49]
    box = lay.doppler_box  # colour Doppler
    assert box is not None
    x, y, w, h = box
    assert w >= 20 and h >= 20  # a box, not a speck
    bx, by, bw, bh = lay.bbox
    assert bx <= x and by <= y and x + w <= bx + bw and y + h <= by + bh  # inside the sector's box
    assert 0 <= bx and 0 <= by and bx + bw <= 800 and by + bh <= 600  # which lies inside the frame
    assert lay.mask[y + h // 2, x + w // 2] == 1
    assert ":doppler" in lay.short()


@pytest.mark.parametrize("seed", [0, 3])
def test_phantom_screen_sector_matches_its_geometry(seed):
    cfg = PhantomConfig(height=360, width=480)
    clip = PhantomClip(8, seed, config=cfg)
    tr = LayoutTracker()
    for i in range(8):
        lay = tr.update(clip[i][0])
    assert lay.kind == "single"
    assert mask_iou(lay.mask, fan_mask(cfg) > 0) > 0.9


def test_layout_switches_only_after_several_disagreeing_frames():
    single = np.zeros((300, 400, 3), np.uint8)
    cv2.ellipse(single, (200, 0), (190, 280), 0, 20, 160, (120, 120, 120), -1)
    dual = np.zeros_like(single)
    dual[40:280, 20:199] = 110  # two panels with a one-pixel black seam, as on the processor's screen
    dual[40:280, 200:380] = 110
    tr = LayoutTracker(switch_after=3)
    for _ in range(8):
        first = tr.update(single)
    assert first.kind == "single" and first.id == 0
    seen = [tr.update(dual).kind for _ in range(10)]
    assert seen[0] == "single" and seen[-1] == "dual"  # one odd frame does not flip it
    assert tr.changes == 1 and tr.layout.id == 1
    for _ in range(8):
        none = tr.update(np.zeros_like(single))
    assert none is None and tr.changes == 2


class _Everywhere(FakeEngine):
    """A model that outlines the whole picture it is given (what an untrained model may do on black borders)."""

    def segment(self, frame, **kwargs):
        h, w = frame.shape[:2]
        return SegmentResult(mask=np.ones((h, w), bool), iou=0.9, box=np.array([0, 0, w, h]),
                             centroid=np.array([w / 2, h / 2]), passes=1, timings={"total": 1.0})


def test_masks_never_leave_the_sector_on_real_screens(tmp_path):
    for name in ("cancer_v1", "cancer_v2"):
        out = tmp_path / name
        with VideoFileSource(shared_data("eus_clips", f"{name}.mp4")) as src:
            summary = StreamPipeline(_Everywhere(), src, out, PipelineConfig(roi="auto")).run()
        tr, layouts = _track(_frames(name))
        for i in range(0, 50, 7):
            m = cv2.imread(str(out / "masks" / f"mask_{i:06d}.png"), 0) > 0
            assert m.sum() > 0 and not (m & (layouts[i].mask == 0)).any()
        assert summary["layout"]["current"]["kind"] == ("dual" if name == "cancer_v2" else "single")
        rows = list(csv.DictReader((out / "latency.csv").open()))
        assert rows[0]["layout"].startswith("0:")


def test_black_screen_gets_no_outline(tmp_path):
    summary = StreamPipeline(_Everywhere(), SyntheticSource(12, lambda i: np.zeros((120, 160, 3), np.uint8)),
                             tmp_path, PipelineConfig(roi="auto")).run()
    assert summary["frames_out"] == 12 and summary["layout"]["current"] is None
    for i in range(12):
        assert cv2.imread(str(tmp_path / "masks" / f"mask_{i:06d}.png"), 0).max() == 0


def test_specks_left_by_clipping_are_dropped():
    from textsam_eus.stream.stages.segment import drop_specks as _drop_specks

    m = np.zeros((100, 100), np.uint8)
    m[20:60, 20:60] = 1  # the outline
    m[90:92, 90:92] = 1  # a fragment at the sector's edge
    m[5:30, 70:95] = 1  # a second real part (39% of the first) stays
    out = _drop_specks(m)
    assert out[40, 40] and out[10, 80] and not out[90, 90]


def test_trust_benchmark_counts_pixels_outside_the_sector():
    from benchmarks import eus_trust as trust

    clip = shared_data("eus_clips", "healthy_v2.mp4")
    whole = trust.clip_run(_Everywhere(), clip, None, presence=False)
    auto = trust.clip_run(_Everywhere(), clip, "auto", presence=False)
    assert whole["shown_fraction"] == 1.0 and whole["outside_sector_fraction"] > 0.3  # the whole screen
    assert auto["shown_fraction"] == 1.0 and auto["outside_sector_fraction"] == 0.0
    assert auto["layout"]["kind"] == "single"


def test_trust_benchmark_reports_frame_level_presence_auc():
    from benchmarks import eus_trust as trust

    clips = {"cancer_a": {"default": {"presence_scores": [0.9, 0.8, 0.2]}},
             "healthy_b": {"default": {"presence_scores": [0.1, 0.3]}},
             "healthy_c": {"default": {"presence_scores": [0.95]}}}
    auc = trust.clip_aucs(clips)
    assert auc == {"cancer_a vs healthy_b": pytest.approx(5 / 6, abs=1e-3), "cancer_a vs healthy_c": 0.0}

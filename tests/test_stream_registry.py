"""The registries of the streaming pipeline (what --source opens, what --masks and the options write), the stages
that own their state, and the run settings in summary.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import FakeEngine, SyntheticSource

from textsam_eus.core.errors import OptionError
from textsam_eus.stream.base import SourceError
from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
from textsam_eus.stream.sinks.base import Sink
from textsam_eus.stream.sinks.encoders import SinkError
from textsam_eus.stream.sinks.registry import MASK_FORMATS, SINKS, SinkFactory, SinkRequest, open_sinks
from textsam_eus.stream.sources.registry import ACCEPTED_SPECS, SOURCES, open_source, source_kind


# --------------------------------------------------------------------------- sources


def test_every_source_form_is_listed_once_and_found_by_its_kind(tmp_path):
    names = [k.name for k in SOURCES]
    assert len(set(names)) == len(names)
    assert sorted(k.listed for k in SOURCES) == list(range(len(SOURCES)))
    lines = ACCEPTED_SPECS.splitlines()
    assert len(lines) == len(SOURCES) and all(f"  - {k.form}" in lines for k in SOURCES)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not really a video")
    expected = {"phantom": "phantom", "PHANTOM:3": "phantom", "v4l2:/dev/video0": "v4l2", "lavfi:testsrc2": "lavfi",
                "v4l2src ! videoconvert ! appsink": "gstreamer", "0": "device", "/dev/video7": "device",
                str(clip): "video", str(tmp_path): "images"}
    assert {spec: source_kind(spec).name for spec in expected} == expected
    assert source_kind(str(tmp_path / "missing.mp4")) is None


def test_an_unknown_source_lists_every_accepted_form(tmp_path):
    with pytest.raises(SourceError) as err:
        open_source(str(tmp_path / "nothing_here"))
    message = str(err.value)
    assert "cannot open source" in message and all(k.form in message for k in SOURCES)
    with pytest.raises(SourceError, match="positive frame count"):
        open_source("phantom:zero")
    src = open_source("phantom:4", width=64, height=48)
    assert src.n_frames == 4 and src.size == (64, 48)
    src.close()


# --------------------------------------------------------------------------- sinks


def test_mask_formats_are_the_registry_entries_that_take_a_mask_name():
    assert MASK_FORMATS == ("png", "video", "nifti", "dicom-seg", "coco")
    assert set(MASK_FORMATS) < set(SINKS)
    with pytest.raises(SinkError, match="choose from png, video, nifti, dicom-seg, coco"):
        PipelineConfig(masks="png,tiff")


def _request(tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = SyntheticSource(2, lambda i: np.zeros((32, 48, 3), np.uint8))
    return SinkRequest(tmp_path, src, model={"name": "t", "checkpoint": None, "sha256": None}, **kw)


def test_sinks_open_in_the_registry_order_then_extras_then_the_index(tmp_path):
    class Extra(Sink):
        def write(self, record):
            pass

    extra = Extra()
    opened = open_sinks(_request(tmp_path, masks=("coco", "png")), extra=[extra])
    try:
        assert list(opened.named) == ["overlay", "png", "coco"]  # --masks order does not matter: the registry's
        assert opened.sinks[-1] is opened.index and opened.sinks[-2] is extra and opened.report is None
        assert [type(s).__name__ for s in opened.sinks] == ["OverlayVideoSink", "MaskPngSink", "CocoMaskSink",
                                                           "Extra", "OutputIndexSink"]
    finally:
        for s in opened.sinks:
            s.close()
    opened = open_sinks(_request(tmp_path / "none", masks=(), overlay=False))
    assert opened.sinks == [opened.index]
    opened.index.close()


def test_a_sink_that_fails_to_open_closes_those_opened_before(tmp_path, monkeypatch):
    closed = []

    class Live(Sink):
        def write(self, record):
            pass

        def close(self):
            closed.append("live")

    def broken(_request):
        raise SinkError("cannot open the COCO file")

    def missing(_request):
        raise ImportError("no module", name="pydicom")

    monkeypatch.setitem(SINKS, "coco", SinkFactory(lambda r: "coco" in r.masks, broken, mask_format=True))
    with pytest.raises(SinkError, match="COCO"):
        open_sinks(_request(tmp_path / "a", masks=("coco",), live_view=Live()))
    assert closed == ["live"]
    monkeypatch.setitem(SINKS, "nifti", SinkFactory(lambda r: "nifti" in r.masks, missing, mask_format=True))
    with pytest.raises(SinkError, match="--masks png,nifti needs pydicom: pip install pydicom"):
        open_sinks(_request(tmp_path / "b", masks=("png", "nifti"), live_view=Live()))
    assert closed == ["live", "live"]


# --------------------------------------------------------------------------- stages and the summary


def test_each_stage_describes_what_it_owns(tmp_path):
    src = SyntheticSource(6, lambda i: np.full((48, 64, 3), 40 + i, np.uint8))
    pipe = StreamPipeline(FakeEngine(), src, tmp_path, PipelineConfig(temporal=True, masks="png",
                                                                      handle_signals=False))
    stages = pipe.compose()
    assert [st.name for st in stages] == ["capture", "segment", "draw", "write"]
    assert stages[1].fn is pipe.segment and stages[2].fn is pipe.draw and stages[3].fn is pipe.writer
    summary = pipe.run()
    assert pipe.capture.describe() == {"frames_in": 6, "frames_dropped": 0, "layout": None}
    assert pipe.writer.frames_out == summary["frames_out"] == 6
    assert pipe.segment.describe() == {"seeded_frames": summary["temporal"]["seeded_frames"]} == {"seeded_frames": 5}
    assert pipe.draw.describe()["size_changes"] == summary["size_changes"] == 0
    assert summary["presence"] == pipe.presence.describe()
    assert summary["outputs"]["masks"] == "masks/" and summary["outputs"]["mask_files"] == 6
    assert "settings" not in json.loads((tmp_path / "summary.json").read_text())


def test_run_settings_are_written_to_the_summary(tmp_path):
    settings = {"source": "synthetic", "masks": "png", "workers": 1}
    src = SyntheticSource(3, lambda i: np.zeros((32, 32, 3), np.uint8))
    summary = StreamPipeline(FakeEngine(), src, tmp_path, PipelineConfig(settings=settings)).run()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"] == on_disk["settings"] == settings
    assert list(on_disk)[-1] == "settings" and on_disk["complete"] is True
    with pytest.raises(OptionError, match=r"settings=\['png'\] is invalid"):
        PipelineConfig(settings=["png"])


def test_an_integer_source_opens_as_its_string_does():
    """``open_source(0, pixel_format=...)`` goes through the device entry, as ``"0"`` does (it used to skip it and
    fail on the keyword): both end in the same one-line capture error on a machine without a camera."""
    from textsam_eus.stream.base import SourceError
    from textsam_eus.stream.sources import open_source

    errors = []
    for spec in (0, "0"):
        with pytest.raises(SourceError) as info:
            open_source(spec, pixel_format="MJPG")
        errors.append(str(info.value))
    assert errors[0] == errors[1]

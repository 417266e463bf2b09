"""Research outputs (--masks nifti,dicom-seg,coco), DICOM input, --deidentify and report.html.

Every output is read back with the library a user's tool would use (nibabel, highdicom/pydicom, pycocotools) and
compared with the PNG masks of the same run, frame for frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from dicom_fakes import ACCESSION, BIRTH_DATE, PATIENT_ID, PATIENT_NAME, make_us_dicom, moving_disc_frames
from fakes import FakeEngine, SyntheticSource

from textsam_eus.cli import main
from textsam_eus.model.refine import SegmentResult
from textsam_eus.stream.base import SourceError
from textsam_eus.stream.sources.dicom import DicomSource
from textsam_eus.stream.sinks.encoders import SinkError
from textsam_eus.stream.sinks.registry import parse_mask_formats
from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
from textsam_eus.stream.record import FrameRecord
from textsam_eus.stream.sinks.report_html import ThumbnailSink
from textsam_eus.stream.sources import open_source

nib = pytest.importorskip("nibabel")
hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")
coco_mask = pytest.importorskip("pycocotools.mask")

ALL = "png,nifti,dicom-seg,coco"
MODEL = {"name": "TextSAM-EUS test", "checkpoint": "m.safetensors", "sha256": "0123456789abcdef" * 4}


class ThresholdEngine(FakeEngine):
    """The bright disc of the test frames is the 'tumour': a mask that changes every frame (empty on some)."""

    def segment(self, frame, **kwargs):
        self.calls.append(kwargs)
        mask = frame[..., 0] > 150
        present = bool(mask.any())
        return SegmentResult(mask=mask, iou=0.8 if present else 0.1, box=None, centroid=None, passes=1,
                             timings={"encode": 1.0, "total": 1.0}, presence=0.9 if present else 0.05)


def _frames(n=8, rgb=True):
    frames = moving_disc_frames(n, rgb=rgb)
    frames[3] = frames[3].min()  # no disc on frame 3: an empty mask
    return frames


def _png_masks(out: Path) -> list[np.ndarray]:
    files = sorted((out / "masks").glob("mask_*.png"))
    return [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0 for f in files]


def _check_all_formats(out: Path, n: int) -> list[np.ndarray]:
    png = _png_masks(out)
    assert len(png) == n and any(m.any() for m in png) and not png[3].any()
    # NIfTI: data[x, y, frame]
    img = nib.load(out / "masks.nii.gz")
    data = np.asarray(img.dataobj)
    assert data.shape == (png[0].shape[1], png[0].shape[0], n) and data.dtype == np.uint8
    for k in range(n):
        assert np.array_equal(data[:, :, k].T > 0, png[k]), f"nifti frame {k}"
    # COCO RLE, through the COCO API
    from pycocotools.coco import COCO

    coco = COCO(str(out / "masks_coco.json"))
    assert sorted(coco.getImgIds()) == list(range(n))
    for k in range(n):
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[k]))
        assert np.array_equal(coco.annToMask(ann) > 0, png[k]), f"coco frame {k}"
        assert ann["frame_index"] == k and ann["score"] == pytest.approx(0.9 if png[k].any() else 0.05)
        assert ann["iou_pred"] == pytest.approx(0.8 if png[k].any() else 0.1)
    info = json.loads((out / "masks_coco.json").read_text())["info"]
    assert info["frames"] == n and info["complete"] is True
    # DICOM SEG per frame, each referring to the overlay Secondary Capture written beside it
    for k in range(n):
        seg = hd.seg.segread(out / "dicom" / f"seg_{k:06d}.dcm")
        sc = pydicom.dcmread(out / "dicom" / f"overlay_{k:06d}.dcm")
        ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
        assert ref.ReferencedSOPInstanceUID == sc.SOPInstanceUID
        pixels = seg.get_pixels_by_source_instance([sc.SOPInstanceUID], segment_numbers=[1])
        assert np.array_equal(pixels[0, :, :, 0] > 0, png[k]), f"dicom-seg frame {k}"
        assert sc.pixel_array.shape == png[k].shape + (3,)
    desc = seg.SegmentSequence[0]
    assert desc.SegmentLabel == "pancreatic tumour"
    assert desc.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "86049000"
    return png


@pytest.mark.slow
def test_every_mask_format_matches_the_png_masks_frame_for_frame(tmp_path):
    frames = _frames(8)
    src = SyntheticSource(8, lambda i: frames[i])
    summary = StreamPipeline(ThresholdEngine(), src, tmp_path, PipelineConfig(masks=ALL, model=MODEL)).run()
    _check_all_formats(tmp_path, 8)
    outputs = summary["outputs"]
    assert outputs["nifti"] == ["masks.nii.gz"] and outputs["coco"] == "masks_coco.json"
    assert outputs["dicom_frames"] == 8 and outputs["nifti_frames"] == 8 and outputs["coco_frames"] == 8
    seg = hd.seg.segread(tmp_path / "dicom" / "seg_000000.dcm")
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "TextSAM-EUS test" and algo.AlgorithmVersion == MODEL["sha256"][:16]
    assert MODEL["sha256"] in algo.AlgorithmParameters
    assert not list(tmp_path.glob("*.part"))  # nothing half-written is left


@pytest.mark.slow
def test_overwrite_removes_the_research_outputs_of_an_earlier_run(tmp_path):
    frames = _frames(4)
    StreamPipeline(ThresholdEngine(), SyntheticSource(4, lambda i: frames[i]), tmp_path,
                   PipelineConfig(masks=ALL, html_report=True)).run()
    for name in ("masks.nii.gz", "masks_coco.json", "dicom", "report.html"):
        assert (tmp_path / name).exists(), name
    with pytest.raises(ValueError, match="--overwrite"):
        StreamPipeline(ThresholdEngine(), SyntheticSource(4, lambda i: frames[i]), tmp_path).run()
    StreamPipeline(ThresholdEngine(), SyntheticSource(4, lambda i: frames[i]), tmp_path,
                   PipelineConfig(overwrite=True)).run()
    for name in ("masks.nii.gz", "masks_coco.json", "dicom", "report.html"):
        assert not (tmp_path / name).exists(), name


def test_a_run_that_stops_early_finalises_the_research_outputs_as_incomplete(tmp_path):
    class Breaks(ThresholdEngine):
        def segment(self, frame, **kw):
            if len(self.calls) >= 5:
                raise RuntimeError("GPU fell off the bus")
            return super().segment(frame, **kw)

    frames = _frames(8)
    with pytest.raises(RuntimeError, match="fell off"):
        StreamPipeline(Breaks(), SyntheticSource(8, lambda i: frames[i]), tmp_path, PipelineConfig(masks=ALL)).run()
    doc = json.loads((tmp_path / "masks_coco.json").read_text())
    assert doc["info"]["complete"] is False and "fell off" in doc["info"]["stop_reason"]
    assert len(doc["annotations"]) == 5
    assert nib.load(tmp_path / "masks.nii.gz").shape[2] == 5
    assert len(list((tmp_path / "dicom").glob("seg_*.dcm"))) == 5
    assert json.loads((tmp_path / "summary.json").read_text())["complete"] is False


def test_nifti_starts_a_new_file_when_the_frame_size_changes(tmp_path):
    a, b = np.zeros((40, 50, 3), np.uint8), np.zeros((30, 60, 3), np.uint8)
    a[10:20, 10:30], b[5:9, 40:55] = 200, 200
    src = SyntheticSource(5, lambda i: a if i < 3 else b)
    summary = StreamPipeline(ThresholdEngine(), src, tmp_path, PipelineConfig(masks="png,nifti")).run()
    assert summary["outputs"]["nifti"] == ["masks.nii.gz", "masks_seg001.nii.gz"]
    png = _png_masks(tmp_path)
    first, second = (np.asarray(nib.load(tmp_path / n).dataobj) for n in summary["outputs"]["nifti"])
    assert first.shape == (50, 40, 3) and second.shape == (60, 30, 2)
    assert all(np.array_equal(first[:, :, k].T > 0, png[k]) for k in range(3))
    assert all(np.array_equal(second[:, :, k].T > 0, png[3 + k]) for k in range(2))


def test_mask_format_list_is_checked():
    assert parse_mask_formats("png") == ("png",) and parse_mask_formats("none") == ()
    assert parse_mask_formats(" PNG, nifti ,coco,png") == ("png", "nifti", "coco")
    with pytest.raises(SinkError, match="unknown format 'jpeg'.*png, video, nifti, dicom-seg, coco"):
        PipelineConfig(masks="png,jpeg")
    with pytest.raises(SinkError, match="'none' cannot be combined"):
        parse_mask_formats("none,png")


def test_bad_masks_and_serve_values_are_one_line_errors_before_any_work(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["stream", "--source", "phantom:2", "--out", str(out), "--masks", "png,tiff"]) == 1
    assert main(["stream", "--source", "phantom:2", "--out", str(out), "--serve", "localhost:http"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown format 'tiff'" in err[0] and "--serve 'localhost:http' is invalid" in err[1]
    assert not out.exists()


# --------------------------------------------------------------------------- DICOM input


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rgb", "mono", "rgb-jpeg", "mono-jpeg"])
def test_dicom_multiframe_ultrasound_streams_like_a_video(tmp_path, kind):
    rgb, jpeg = kind.startswith("rgb"), kind.endswith("jpeg")
    frames = _frames(6, rgb=rgb)
    path = tmp_path / "cine.dcm"
    try:
        make_us_dicom(path, frames, photometric="RGB" if rgb else "MONOCHROME2", jpeg=jpeg)
        src = open_source(str(path))
    except (ImportError, SourceError) as exc:  # no JPEG encoder/decoder installed
        if jpeg:
            pytest.skip(f"JPEG baseline codec not available: {exc}")
        raise
    assert isinstance(src, DicomSource) and src.fps == pytest.approx(25.0) and src.size == (128, 96)
    assert src.n_frames == 6 and src.dicom.pixel_spacing == pytest.approx((0.2, 0.2))  # 0.02 cm regions
    records = list(src)
    assert [r.index for r in records] == list(range(6))
    assert [r.pts for r in records] == pytest.approx([i * 0.04 for i in range(6)])
    for r, f in zip(records, frames):
        want = f if rgb else np.repeat(f[..., None], 3, -1)
        assert r.image.shape == (96, 128, 3) and r.image.dtype == np.uint8
        diff = np.abs(r.image.astype(int) - want.astype(int))
        assert (diff.max() == 0) if not jpeg else (diff.mean() < 4)
    out = tmp_path / "out"
    summary = StreamPipeline(ThresholdEngine(), open_source(str(path)), out,
                             PipelineConfig(masks=ALL, model=MODEL)).run()
    assert summary["frames_out"] == 6 and summary["complete"]
    _check_all_formats(out, 6)
    assert nib.load(out / "masks.nii.gz").header.get_zooms() == pytest.approx((0.2, 0.2, 1.0))
    sc = pydicom.dcmread(out / "dicom" / "overlay_000002.dcm")  # refers to the source frame it was drawn on
    source = pydicom.dcmread(path, stop_before_pixels=True)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedFrameNumber == 3
    seg = hd.seg.segread(out / "dicom" / "seg_000002.dcm")
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == PATIENT_ID  # joins the study


def test_dicom_source_errors_name_the_problem(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def header(**attrs):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.3.1", generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for k, v in attrs.items():
            setattr(ds, k, v)
        return ds

    header().save_as(tmp_path / "report.dcm", enforce_file_format=True)
    with pytest.raises(SourceError, match="without an image"):
        DicomSource(tmp_path / "report.dcm")
    header(Rows=4, Columns=4, PhotometricInterpretation="PALETTE COLOR").save_as(tmp_path / "pal.dcm",
                                                                                enforce_file_format=True)
    with pytest.raises(SourceError, match="'PALETTE COLOR' is not supported.*convert"):
        DicomSource(tmp_path / "pal.dcm")
    header(Rows=4, Columns=4, PhotometricInterpretation="MONOCHROME2", SamplesPerPixel=1, BitsAllocated=8,
           BitsStored=8, HighBit=7, PixelRepresentation=0).save_as(tmp_path / "nopix.dcm", enforce_file_format=True)
    with pytest.raises(SourceError, match="no pixel data"):
        DicomSource(tmp_path / "nopix.dcm")
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(SourceError, match="fake.dcm: (not a DICOM file|a DICOM file without an image)"):
        DicomSource(tmp_path / "fake.dcm")


def test_dicom_without_frame_rate_warns_and_fps_overrides(tmp_path):
    make_us_dicom(tmp_path / "a.dcm", _frames(4), frame_time_ms=None)
    src = DicomSource(tmp_path / "a.dcm")
    assert src.fps == 15.0 and "pass --fps" in src.warnings[0]
    assert DicomSource(tmp_path / "a.dcm", fps=50).fps == 50.0


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


IDENTIFIERS = (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, ACCESSION, "Referrer^Otto", "Test Hospital")


@pytest.mark.slow
def test_deidentify_leaves_no_patient_identifier_in_any_output(tmp_path, capsys):
    path = tmp_path / "in" / "cine.dcm"
    path.parent.mkdir()
    make_us_dicom(path, _frames(4))
    source = pydicom.dcmread(path, stop_before_pixels=True)
    uids = (source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID)
    # without --deidentify the DICOM outputs join the source's study (so the grep below can find what it looks for)
    plain = tmp_path / "plain"
    StreamPipeline(ThresholdEngine(), DicomSource(path), plain, PipelineConfig(masks=ALL)).run()
    blob = _all_bytes(plain)
    assert PATIENT_NAME.encode() in blob and PATIENT_ID.encode() in blob and source.StudyInstanceUID.encode() in blob

    out = tmp_path / "deid"
    assert main(["stream", "--source", str(path.parent), "--out", str(out), "--engine", "torch", "--masks", ALL,
                 "--deidentify", "--roi", "none", "--no-progress"]) == 0
    run = out / "cine"  # a folder of DICOM files: one output folder per file, like a folder of videos
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    assert {"masks.nii.gz", "masks_coco.json", "summary.json", "report.html", "outputs.csv"} <= set(files)
    assert len([f for f in files if f.startswith("dicom/seg_")]) == 4
    blob = _all_bytes(run)
    for text in IDENTIFIERS + uids:
        assert text.encode() not in blob, f"{text} found in the outputs"
        assert text.upper().encode() not in blob.upper()
    logs = capsys.readouterr()
    assert not any(t in logs.out + logs.err for t in IDENTIFIERS)
    seg = hd.seg.segread(run / "dicom" / "seg_000000.dcm")
    assert seg.PatientIdentityRemoved == "YES" and seg.PatientName == "" and seg.PatientID == ""
    assert "SourceImageSequence" not in pydicom.dcmread(run / "dicom" / "overlay_000000.dcm")
    assert json.loads((run / "summary.json").read_text())["deidentified"] is True


# --------------------------------------------------------------------------- report.html


@pytest.mark.slow
def test_report_html_has_the_plots_and_sample_frames(tmp_path):
    frames = _frames(8)
    summary = StreamPipeline(ThresholdEngine(), SyntheticSource(8, lambda i: frames[i]), tmp_path,
                             PipelineConfig(html_report=True)).run()
    page = (tmp_path / "report.html").read_text()
    assert summary["outputs"]["report"] == "report.html"
    assert json.loads((tmp_path / "summary.json").read_text())["outputs"]["report"] == "report.html"
    for title in ("Latency over time", "Stages over time", "Per-stage p50 / p99", "Presence score over time"):
        assert f'alt="{title}"' in page, title
    assert page.count('src="data:image/png;base64,') == 4
    assert 1 <= page.count('src="data:image/jpeg;base64,') <= 6
    # no presence scores: no presence plot
    StreamPipeline(FakeEngine(), SyntheticSource(3, lambda i: frames[i]), tmp_path / "b",
                   PipelineConfig(html_report=True)).run()
    assert "Presence score over time" not in (tmp_path / "b" / "report.html").read_text()


def test_thumbnails_stay_few_and_spread_over_a_long_run():
    sink = ThumbnailSink(n=4, width=16)
    img = np.zeros((12, 16, 3), np.uint8)
    for i in range(1000):
        rec = FrameRecord(i, None, 0.0, None, "x")
        rec.overlay = img
        sink.write(rec)
        assert len(sink.thumbs) < 8
    picked = [i for i, _ in sink.sample()]
    assert len(picked) == 4 and picked[0] == 0 and picked[-1] == 999 and picked == sorted(picked)
    for n in (6, 7, 8, 12, 13):  # the run's last frame ends the strip whatever the count
        short = ThumbnailSink(n=3, width=16)
        for i in range(n):
            rec = FrameRecord(i, None, 0.0, None, "x")
            rec.overlay = img
            short.write(rec)
        assert short.sample()[-1][0] == n - 1 and short.sample()[0][0] == 0, n


@pytest.mark.slow
def test_research_sinks_do_not_grow_with_the_run(tmp_path):
    """Python-side memory (tracemalloc sees NumPy's buffers too) between frame 200 and frame 1200 of the NIfTI,
    COCO, thumbnail and live-view sinks: a sink that kept its frames would grow by 1000 x 19 kB."""
    import tracemalloc

    from textsam_eus.stream.view.live_view import LiveViewSink
    from textsam_eus.stream.sinks.coco import CocoMaskSink
    from textsam_eus.stream.sinks.nifti import NiftiMaskSink

    sinks = [NiftiMaskSink(tmp_path), CocoMaskSink(tmp_path), ThumbnailSink(), LiveViewSink("127.0.0.1:0", quiet=True)]
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        for i in range(1200):
            rec = FrameRecord(i, None, 0.0, i / 30, "long")
            rec.mask = (rng.random((120, 160)) > 0.5).astype(np.uint8)
            rec.overlay = np.repeat(rec.mask[..., None] * 200, 3, -1).astype(np.uint8)
            rec.timings["latency_capture_to_overlay"] = 20.0
            for s in sinks:
                s.write(rec)
            if i == 200:
                base = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        for s in sinks:
            s.close()
    assert grown < 2_000_000, f"{grown / 1e6:.1f} MB more after 1000 frames"
    assert np.asarray(nib.load(tmp_path / "masks.nii.gz").dataobj).shape == (160, 120, 1200)
    assert len(json.loads((tmp_path / "masks_coco.json").read_text())["annotations"]) == 1200

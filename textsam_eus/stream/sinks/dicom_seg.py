"""``--masks dicom-seg``: DICOM Segmentation (highdicom) of every frame, with a Secondary Capture of its overlay.

highdicom builds a Segmentation from a single source frame, or from many frames only when the source has a Frame of
Reference (CT, MR, slides): ultrasound cine has none, and for that case highdicom accepts one frame per instance
(highdicom issue #284). So each frame gets one binary SEG instance, written as its frame comes (nothing is
accumulated: streaming, flat memory), all in one SEG series:

* ``dicom/overlay_NNNNNN.dcm`` - Secondary Capture Image of the overlay the run draws (JPEG baseline,
  YBR_FULL_422, encoded by highdicom), the image the SEG frame refers to. For DICOM input it names the source frame
  in its Source Image Sequence (SOP Instance UID + frame number) and joins the source's study.
* ``dicom/seg_NNNNNN.dcm`` - the SEG: segment 1 "pancreatic tumour", category SCT 49755003 "Morphologically
  abnormal structure", type SCT 86049000 "Malignant neoplasm, primary", anatomic region SCT 15776009 "Pancreas",
  automatic, algorithm identification = the model's name, the checkpoint's SHA-256 (first 16 hex digits as the
  version, all 64 as a parameter) and the checkpoint's file name. Empty masks are written too (frame for frame).

``deidentify=True``: new Study/Series/SOP Instance UIDs, empty Patient Name / ID / Birth Date / Sex, no accession,
study ID/date/time, referring physician or institution, no reference to the source's UIDs, and Patient Identity
Removed = YES. Without it, the patient and study attributes of a DICOM source are copied so the outputs join its
study (non-DICOM inputs never have any). Files are written to a ``.part`` name and renamed.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..sources.dicom import DicomInfo
from .encoders import SinkError
from ..manifest import claim
from ..record import FrameRecord
from .base import Sink

__all__ = ["DicomSegSink", "PATIENT_STUDY_KEYWORDS"]

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                          "StudyID", "AccessionNumber", "ReferringPhysicianName")
DEID_METHOD = "textsam-eus --deidentify: new UIDs, identifiers removed"


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("textsam-eus")
    except PackageNotFoundError:
        return "unknown"


def _save(ds, path: Path) -> None:
    part = path.with_name(path.name + ".part")
    claim(path)
    try:
        ds.save_as(str(part), enforce_file_format=True)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


class DicomSegSink(Sink):
    """One SEG instance + one overlay Secondary Capture per frame, in ``<out>/dicom/`` (see the module docstring)."""

    def __init__(self, out: Path, source: DicomInfo | None = None, model: dict | None = None,
                 deidentify: bool = False, folder: str = "dicom") -> None:
        try:
            import highdicom as hd
            from pydicom.sr.codedict import codes
            from pydicom.uid import generate_uid
        except ImportError as exc:
            raise SinkError(f"--masks dicom-seg needs highdicom and pydicom ({exc}); pip install highdicom") from None
        self.out, self.folder, self.source, self.deidentify = Path(out), folder, source, bool(deidentify)
        claim(self.out / folder, is_dir=True)
        (self.out / folder).mkdir(parents=True, exist_ok=True)
        model = dict(model or {})
        sha = str(model.get("sha256") or "unknown")
        self.model_name = str(model.get("name") or "TextSAM-EUS")[:64]
        self.algorithm = hd.AlgorithmIdentificationSequence(
            name=self.model_name, family=codes.cid7162.ArtificialIntelligence, version=sha[:16],
            source="TextSAM-EUS", parameters={"checkpoint_sha256": sha, "checkpoint": str(model.get("checkpoint", ""))})
        self.segment = hd.seg.SegmentDescription(
            segment_number=1, segment_label="pancreatic tumour",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.MalignantNeoplasmPrimary,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=self.algorithm, anatomic_regions=[codes.SCT.Pancreas],
            tracking_uid=generate_uid(), tracking_id="pancreatic tumour")
        self.study = self._study_attributes(generate_uid)
        self.sc_series, self.seg_series = generate_uid(), generate_uid()
        self.frames = 0
        self.version = _software_version()

    def _study_attributes(self, generate_uid) -> dict[str, Any]:
        header = self.source.header if self.source is not None else None
        attrs: dict[str, Any] = {kw: "" for kw in PATIENT_STUDY_KEYWORDS}
        attrs["StudyInstanceUID"] = generate_uid()
        if header is not None and not self.deidentify:
            for kw in PATIENT_STUDY_KEYWORDS + ("StudyInstanceUID",):
                if kw in header:
                    attrs[kw] = header.get(kw)
        if self.deidentify:
            attrs["PatientIdentityRemoved"] = "YES"
            attrs["DeidentificationMethod"] = DEID_METHOD
        return attrs

    # ------------------------------------------------------------------ per frame
    def _overlay_sc(self, record: FrameRecord, number: int):
        from highdicom.frame import encode_frame
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.encaps import encapsulate
        from pydicom.uid import JPEGBaseline8Bit, generate_uid

        image = np.ascontiguousarray(record.overlay)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.SOPClassUID, ds.SOPInstanceUID = SC_STORAGE, generate_uid()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = SC_STORAGE, ds.SOPInstanceUID
        for kw, value in self.study.items():
            setattr(ds, kw, value)
        now = datetime.datetime.now()
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = self.sc_series, 901, number
        ds.Modality, ds.ConversionType, ds.PatientOrientation = "OT", "WSD", ""
        ds.SeriesDescription = "TextSAM-EUS overlay"
        ds.Manufacturer, ds.SoftwareVersions = "TextSAM-EUS", self.version
        ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = ds.ContentDate, ds.ContentTime
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.BurnedInAnnotation = "YES"  # the outline and the status text are drawn into the pixels
        ds.DerivationDescription = "TextSAM-EUS overlay: tumour outline drawn on the input frame"
        ds.Rows, ds.Columns = image.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
        if self.source is not None and not self.deidentify:
            ref = Dataset()
            ref.ReferencedSOPClassUID = self.source.header.SOPClassUID
            ref.ReferencedSOPInstanceUID = self.source.header.SOPInstanceUID
            if self.source.multi_frame:
                ref.ReferencedFrameNumber = int(record.index) + 1
            ds.SourceImageSequence = [ref]
        frame = encode_frame(image, transfer_syntax_uid=JPEGBaseline8Bit, bits_allocated=8, bits_stored=8,
                             photometric_interpretation="YBR_FULL_422", pixel_representation=0, planar_configuration=0)
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        return ds

    def write(self, record: FrameRecord) -> None:
        import highdicom as hd
        from pydicom.uid import generate_uid

        number = int(record.index) + 1
        stem = record.name if record.name else f"{record.index:06d}"
        sc = self._overlay_sc(record, number)
        seg = hd.seg.Segmentation(
            source_images=[sc], pixel_array=np.asarray(record.mask > 0, dtype=np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[self.segment],
            series_instance_uid=self.seg_series, series_number=902, sop_instance_uid=generate_uid(),
            instance_number=number, manufacturer="TextSAM-EUS", manufacturer_model_name=self.model_name,
            software_versions=self.version, device_serial_number=self.algorithm[0].AlgorithmVersion,
            content_label="TUMOUR", content_description=f"TextSAM-EUS frame {record.index}"[:64],
            series_description="TextSAM-EUS tumour segmentation", omit_empty_frames=False)
        if self.deidentify:
            seg.PatientIdentityRemoved, seg.DeidentificationMethod = "YES", DEID_METHOD
        sc_rel, seg_rel = f"{self.folder}/overlay_{stem}.dcm", f"{self.folder}/seg_{stem}.dcm"
        _save(sc, self.out / sc_rel)
        _save(seg, self.out / seg_rel)
        self.frames += 1
        record.info.setdefault("outputs", {}).setdefault("mask", seg_rel)

    def describe(self) -> dict[str, Any]:
        return {"dicom_seg": f"{self.folder}/seg_*.dcm", "dicom_overlay_sc": f"{self.folder}/overlay_*.dcm",
                "dicom_frames": self.frames, "dicom_deidentified": self.deidentify,
                "dicom_seg_series_uid": self.seg_series if self.frames else None}

"""Multi-frame ultrasound DICOM files made for the tests (pydicom; JPEG baseline frames encoded by highdicom)."""

from __future__ import annotations

import numpy as np

PATIENT_NAME = "Testpatient^Zelda"
PATIENT_ID = "PID-93017"
BIRTH_DATE = "19610203"
ACCESSION = "ACC-55123"


def moving_disc_frames(n: int, h: int = 96, w: int = 128, rgb: bool = True) -> np.ndarray:
    """``n`` frames: a bright disc moving across a textured dark background (RGB or gray)."""
    rng = np.random.default_rng(3)
    base = rng.integers(10, 60, (h, w), dtype=np.uint8)
    yy, xx = np.ogrid[:h, :w]
    frames = []
    for i in range(n):
        img = base.copy()
        cx, cy = 25 + 6 * i, h // 2
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 15 ** 2] = 220
        frames.append(np.stack([img, img, (img * 0.8).astype(np.uint8)], -1) if rgb else img)
    return np.stack(frames)


def make_us_dicom(path, frames: np.ndarray, *, photometric: str = "RGB", jpeg: bool = False,
                  frame_time_ms: float | None = 40.0, pixel_spacing_cm: float | None = 0.02) -> None:
    """Write ``frames`` (n, h, w[, 3]) uint8 as an Ultrasound Multi-frame Image with patient identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.tag import Tag
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    n, h, w = frames.shape[:3]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = PATIENT_NAME, PATIENT_ID, BIRTH_DATE, "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240105", "101500", ACCESSION, "S1"
    ds.ReferringPhysicianName, ds.InstitutionName = "Referrer^Otto", "Test Hospital"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "US", 1, 1, "TestVendor"
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, n
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    color = frames.ndim == 4
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = "YBR_FULL_422" if jpeg and color else photometric
    if color:
        ds.PlanarConfiguration = 0
    if frame_time_ms is not None:
        ds.FrameTime = frame_time_ms
        ds.FrameIncrementPointer = Tag("FrameTime")
    if pixel_spacing_cm is not None:
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = w - 1, h - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
        region.PhysicalDeltaX = region.PhysicalDeltaY = pixel_spacing_cm
        ds.SequenceOfUltrasoundRegions = [region]
    if jpeg:
        from highdicom.frame import encode_frame
        from pydicom.encaps import encapsulate

        encoded = [encode_frame(f, transfer_syntax_uid=JPEGBaseline8Bit, bits_allocated=8, bits_stored=8,
                                photometric_interpretation=ds.PhotometricInterpretation, pixel_representation=0,
                                planar_configuration=0 if color else None) for f in frames]
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(str(path), enforce_file_format=True)

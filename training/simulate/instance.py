"""Rendered frames to DICOM Ultrasound Image Storage instances (pydicom Datasets).

Each instance carries the Patient / Study / Series / Equipment / Image modules, the US Region
Calibration module (Sequence of Ultrasound Regions with physical deltas in cm per pixel) and a
note that it is a synthetic phantom, not for diagnosis. RGB frames may be JPEG baseline
compressed (Pillow encoder, 4:2:2 subsampling, photometric interpretation YBR_FULL_422).

Region data types used (PS3.3 C.8.5.5.1.2): 0x0001 tissue for B-mode panels and imaging
regions; 0x0002 colour flow for the SWE box (the standard has no elastography code; it is the
colour-coded overlay type); 0x000E colour bar; 0x000D grey bar. Bars use spatial format 0x0005
(graphics), imaging regions 0x0001 (2D).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
)

from sswe_node.imaging.regions import SPATIAL_2D, SPATIAL_GRAPHICS, UNITS_CM, UNITS_NONE
from training.simulate.render import Box
from training.simulate.scanners import Scanner

__all__ = ["Region", "InstanceInfo", "build_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Region:
    """One entry of the Sequence of Ultrasound Regions."""

    box: Box
    data_type: int
    spacing_mm: float | None = None
    depth_at_top_mm: float = 0.0
    lateral_at_centre_mm: float = 0.0


@dataclass(frozen=True)
class InstanceInfo:
    """Identifiers and descriptions of one instance (all synthetic)."""

    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_uid: str
    study_id: str
    study_date: str
    study_time: str
    accession: str
    study_description: str
    series_uid: str
    series_number: int
    series_description: str
    sop_uid: str
    instance_number: int
    body_part: str = "PROSTATE"


def _region_item(region: Region) -> Dataset:
    item = Dataset()
    b = region.box
    item.RegionLocationMinX0 = b.left
    item.RegionLocationMinY0 = b.top
    item.RegionLocationMaxX1 = b.right - 1
    item.RegionLocationMaxY1 = b.bottom - 1
    imaging = region.spacing_mm is not None
    item.RegionSpatialFormat = SPATIAL_2D if imaging else SPATIAL_GRAPHICS
    item.RegionDataType = region.data_type
    item.RegionFlags = 0
    item.PhysicalUnitsXDirection = UNITS_CM if imaging else UNITS_NONE
    item.PhysicalUnitsYDirection = UNITS_CM if imaging else UNITS_NONE
    delta = (region.spacing_mm or 0.0) / 10.0
    item.PhysicalDeltaX = delta
    item.PhysicalDeltaY = delta
    if imaging:
        # reference pixel: top centre of the region, at the region's first depth
        item.ReferencePixelX0 = (b.right - b.left) // 2
        item.ReferencePixelY0 = 0
        item.ReferencePixelPhysicalValueX = region.lateral_at_centre_mm / 10.0
        item.ReferencePixelPhysicalValueY = region.depth_at_top_mm / 10.0
    return item


def _jpeg_encode(frame: NDArray[np.uint8], quality: int) -> bytes:
    buffer = io.BytesIO()
    # subsampling=1 is 4:2:2, matching YBR_FULL_422
    Image.fromarray(frame, mode="RGB").save(buffer, format="JPEG", quality=quality, subsampling=1)
    return buffer.getvalue()


def build_dataset(
    frame: NDArray[np.uint8],
    info: InstanceInfo,
    scanner: Scanner,
    regions: list[Region],
    *,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "ABDOMINAL"),
    jpeg: bool = False,
    jpeg_quality: int = 92,
    comments: str = "",
) -> Dataset:
    """Build an Ultrasound Image Storage instance from a rendered frame.

    Parameters
    ----------
    frame : ndarray uint8
        ``(rows, cols)`` grey (MONOCHROME2) or ``(rows, cols, 3)`` RGB.
    info : InstanceInfo
        Identifiers and descriptions.
    scanner : Scanner
        The equipment.
    regions : list of Region
        The Sequence of Ultrasound Regions entries.
    image_type : tuple of str
        Image Type values.
    jpeg : bool
        JPEG baseline compress (RGB frames only) as YBR_FULL_422.
    jpeg_quality : int
        Pillow JPEG quality.
    comments : str
        Appended to the image comments (after the synthetic-data note).

    Returns
    -------
    pydicom.dataset.Dataset
        With file meta information, ready for ``save_as(path, enforce_file_format=True)``.
    """
    rgb = frame.ndim == 3
    if jpeg and not rgb:
        raise ValueError("JPEG compression is only offered for RGB frames")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = info.sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SSWE_SIM_1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(image_type)
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = info.sop_uid
    ds.StudyDate = info.study_date
    ds.SeriesDate = info.study_date
    ds.ContentDate = info.study_date
    ds.StudyTime = info.study_time
    ds.SeriesTime = info.study_time
    ds.ContentTime = info.study_time
    ds.AccessionNumber = info.accession
    ds.Modality = "US"
    ds.Manufacturer = scanner.manufacturer
    ds.InstitutionName = "Synthetic Phantom Clinic"
    ds.ReferringPhysicianName = ""
    ds.StationName = scanner.station
    ds.StudyDescription = info.study_description
    ds.SeriesDescription = info.series_description
    ds.ManufacturerModelName = scanner.model_name
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.patient_birth_date
    ds.PatientSex = info.patient_sex
    ds.PatientIdentityRemoved = "NO"
    ds.BodyPartExamined = info.body_part
    ds.DeviceSerialNumber = scanner.serial
    ds.SoftwareVersions = scanner.software
    ds.TransducerData = [scanner.probe.name, f"{scanner.probe.centre_frequency_mhz:g} MHz"]
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = info.series_uid
    ds.StudyID = info.study_id
    ds.SeriesNumber = info.series_number
    ds.InstanceNumber = info.instance_number
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = " ".join(
        p for p in ("SYNTHETIC PHANTOM DATA - NOT FOR DIAGNOSIS.", comments) if p
    )
    ds.SequenceOfUltrasoundRegions = Sequence([_region_item(r) for r in regions])

    ds.Rows, ds.Columns = int(frame.shape[0]), int(frame.shape[1])
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if rgb:
        ds.PlanarConfiguration = 0
    if jpeg:
        ds.PhotometricInterpretation = "YBR_FULL_422"
        data = _jpeg_encode(frame, jpeg_quality)
        ds.PixelData = encapsulate([data])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = round(frame.nbytes / len(data), 2)
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
        ds.PixelData = np.ascontiguousarray(frame).tobytes()
        ds.LossyImageCompression = "00"
    return ds

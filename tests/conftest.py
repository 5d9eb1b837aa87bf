"""Shared fixtures: real peers (Orthanc, dcmtk) and the simulated archive."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node_support import Postgres, StartNode, paused_nodes
from tests.peers import Orthanc


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A real Orthanc on free loopback ports, stopped after the test."""
    server = Orthanc(tmp_path / "orthanc")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """One throwaway PostgreSQL server per test module (each test makes its own database)."""
    try:
        server = Postgres()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[StartNode]:
    """Start in-process nodes with processing paused (receive and store only), stopped after."""
    with paused_nodes(tmp_path) as start:
        yield start


@pytest.fixture(scope="session")
def require_dcmtk() -> None:
    """Fail clearly when dcmtk is missing (the README's set-up installs it)."""
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is not installed: run ./scripts/setup.sh")


def _make_us_source(
    *,
    rows: int = 240,
    cols: int = 320,
    frames: int = 1,
    patient: bool = True,
    regions: bool = True,
    seed: int = 0,
):  # -> pydicom.Dataset
    """Build a small ultrasound instance (speckle-like B-mode), optionally minimal/de-identified."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        UltrasoundImageStorage,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )

    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "US"
    if patient:
        ds.PatientName = "Test^Prostate"
        ds.PatientID = "SSWE-TEST-1"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "M"
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.StudyDate, ds.StudyTime = "20260101", "101010"
        ds.AccessionNumber, ds.StudyID = "A1", "S1"
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber, ds.InstanceNumber = 3, 7
        ds.Manufacturer = "Test scanner"
    else:  # what a strict de-identifier leaves: the UIDs only
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if regions:
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 10, 10
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = cols - 11, rows - 11
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = region.PhysicalDeltaY = 0.02
        ds.SequenceOfUltrasoundRegions = [region]
    shape = (frames, rows, cols) if frames > 1 else (rows, cols)
    pixels = np.clip(rng.rayleigh(40.0, size=shape), 0, 255).astype(np.uint8)
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = (0x0018, 0x1063)
        ds.FrameTime = 33.3
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.fixture
def make_us_source():
    """Factory of small synthetic ultrasound instances (see ``_make_us_source``)."""
    return _make_us_source


@pytest.fixture(scope="session")
def dciodvfy_errors():
    """Return a function running dicom3tools' ``dciodvfy`` on a file, giving its "Error" lines."""
    import subprocess

    if shutil.which("dciodvfy") is None:
        pytest.fail("dicom3tools is not installed: run ./scripts/setup.sh")

    def run(path) -> list[str]:
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = (done.stdout + done.stderr).splitlines()
        return [line for line in lines if line.startswith("Error")]

    return run


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real but untrained, small packaged model (training's U-Net and packager)."""
    from training.package import write_package
    from training.unet import build_unet

    out = tmp_path_factory.mktemp("models") / "tiny-test"
    write_package(
        build_unet((96, 64), filters=4, seed=0),
        out,
        name="tiny-test",
        version="0.0.1",
        organ="prostate",
        quantity="youngs-modulus",
        trained_on="nothing: an untrained network for the tests",
        status="provisional",
    )
    return out

"""Outputs of pre-encoded (raw) elements: written as pydicom would encode them, read back equal."""

from __future__ import annotations

import copy
import io
import pickle
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue

from sswe_node.outputs import build_parametric_map, build_secondary_capture, encoded

MODEL = SimpleNamespace(
    name="prostate-sim", version="1.2.0", quantity="youngs-modulus", unit="kPa",
    colour_bar=(0.0, 70.0),
)  # fmt: skip


def _written(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _outputs(source: pydicom.Dataset, model=MODEL) -> list[pydicom.Dataset]:
    rng = np.random.default_rng(5)
    values = rng.uniform(0, 80, (40, 60)).astype(np.float32)
    sd = rng.gamma(2.0, 3.0, values.shape).astype(np.float32)
    bmode = (rng.random(values.shape) * 255).astype(np.float32)
    roi = (10, 20, 50, 80)
    return [
        build_parametric_map(source, values, roi=roi, model=model, spacing_mm=(0.2, 0.3)),
        build_parametric_map(
            source,
            values,
            roi=roi,
            model=model,
            spacing_mm=(0.2, 0.3),
            sd=sd,
            scale=(0, 60),
            scale_source="image-labels",
        ),  # fmt: skip
        build_secondary_capture(
            source,
            values,
            bmode,
            model=model,
            sd=sd,
            sd_threshold=6.0,
            out_of_distribution=True,
            scale_source="config",
        ),  # fmt: skip
    ]


def _convert_all(ds: pydicom.Dataset) -> None:
    """Turn every raw element, nested ones too, into a pydicom element (re-encoded on write)."""
    ds.walk(lambda dataset, element: None)
    for element in ds.file_meta:
        assert element is not None


@pytest.mark.parametrize("multiframe", [False, True])
def test_raw_outputs_are_written_as_pydicom_encodes_them(make_us_source, multiframe) -> None:
    source = make_us_source()
    if multiframe:
        source.NumberOfFrames = 2
    for ds in _outputs(source):
        assert any(isinstance(e, RawDataElement) for e in ds._dict.values())
        ours = _written(ds)
        _convert_all(ds)
        assert not any(isinstance(e, RawDataElement) for e in ds._dict.values())
        ds.set_original_encoding(None, None)  # pydicom encodes every element anew
        assert _written(ds) == ours
        back = pydicom.dcmread(io.BytesIO(ours))
        assert back.to_json_dict() == ds.to_json_dict()


def test_a_non_ascii_source_and_model_keep_their_characters(make_us_source) -> None:
    source = make_us_source()
    source.SpecificCharacterSet = "ISO_IR 192"
    source.PatientName = "Müller^Jörg"
    model = SimpleNamespace(**{**vars(MODEL), "name": "prostate-sïm"})
    for ds in _outputs(source, model):
        back = pydicom.dcmread(io.BytesIO(_written(ds)))
        assert str(back.PatientName) == "Müller^Jörg"
        assert "prostate-sïm" in back.DerivationDescription
        assert "prostate-sïm" in back.ContributingEquipmentSequence[-1].ManufacturerModelName
        assert back.SOPInstanceUID == ds.SOPInstanceUID


def test_text_and_numbers_encode_as_pydicom_does() -> None:
    assert encoded.value_bytes("UI", "1.23") == b"1.23"
    assert encoded.value_bytes("UI", "1.2.3") == b"1.2.3\0"
    assert encoded.value_bytes("CS", ["A", "F"]) == b"A\\F "
    assert encoded.value_bytes("US", 512) == b"\x00\x02"
    assert encoded.value_bytes("CS", None) == b""
    assert encoded.decimal(0.1 + 0.2) == str(pydicom.valuerep.DSfloat(0.1 + 0.2, auto_format=True))
    assert len(encoded.decimal(1 / 3)) <= 16
    element = encoded.encode(0x00280010, "US", 7)
    assert element == b"\x28\x00\x10\x00US\x02\x00\x07\x00"
    long = encoded.encode(0x7FE00008, "OF", b"")
    assert long == b"\xe0\x7f\x08\x00OF\x00\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4096, 100_001])
def test_filled_buffer_is_what_the_fill_wrote(size) -> None:
    pattern = (np.arange(size) * 7 % 251).astype(np.uint8)

    def fill(view: np.ndarray) -> None:
        assert view.shape == (size,) and view.flags.writeable
        view[:] = pattern

    data = encoded.filled_buffer(size, fill)
    assert type(data) is bytearray and data == pattern.tobytes()


def test_buffer_element_keeps_a_bytearray_and_writes_it_as_bytes() -> None:
    # pydicom's value setter takes a bytearray for numbers (a multi-valued element of ints).
    data = bytearray(b"\x01\x02\x03")
    assert isinstance(pydicom.DataElement(0x7FE00010, "OB", data).value, MultiValue)
    elem = encoded.buffer_element(0x7FE00010, "OB", data)
    assert elem.value is data  # (its VM reads as len(data): pydicom counts a bytearray)
    ds = Dataset()
    ds[0x7FE00010] = elem
    as_bytes = Dataset()
    as_bytes[0x7FE00010] = pydicom.DataElement(0x7FE00010, "OB", bytes(data))
    written = []
    for dataset in (ds, as_bytes, copy.deepcopy(ds), pickle.loads(pickle.dumps(ds))):
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_dataset(buffer, dataset)
        written.append(buffer.getvalue())
    assert written[0].endswith(b"OB\0\0\x04\0\0\0\x01\x02\x03\0")  # padded to even length
    assert written.count(written[0]) == 4

"""The colour Secondary Capture: B-mode with the sSWE overlay, colour bar and burned-in warning."""

from __future__ import annotations

import datetime

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from sswe_node.outputs import encoded
from sswe_node.outputs.derived import ModelInfo, derivation_description, scale_description
from sswe_node.outputs.header import Code, ModelKey, code_item, model_key, new_derived
from sswe_node.outputs.labels import WARNING, format_value, quantity_name
from sswe_node.outputs.lossy import lossy_elements
from sswe_node.outputs.render import OOD_BANNER, capture_pixels

__all__ = ["build_secondary_capture", "capture_title", "SECONDARY_CAPTURE_STORAGE"]

#: SOP Class UID of Secondary Capture Image Storage.
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

_IMAGE_PROCESSING = Code("110001", "DCM", "Image Processing")

_PATIENT_ORIENTATION_VALUES = {"A", "P", "L", "R", "H", "F"}


def capture_title(model: ModelInfo) -> str:
    """Return the second header line burned into the capture."""
    return (
        f"sSWE {quantity_name(model.quantity)} ({model.unit}) - model {model.name} {model.version}"
    )


def _patient_orientation(source: Dataset) -> list[str] | None:
    value = source.get("PatientOrientation", None)
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    row, col = (str(v) for v in value)
    if set(row) <= _PATIENT_ORIENTATION_VALUES and set(col) <= _PATIENT_ORIENTATION_VALUES:
        if row and col and len(row) == 1 and len(col) == 1:
            return [row, col]
    return None


def _fixed_attributes(sc: Dataset, model: ModelKey) -> None:
    """Write the capture attributes that depend on nothing (once per model, cached)."""
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    sc.DerivationCodeSequence = [code_item(_IMAGE_PROCESSING)]
    sc.SamplesPerPixel = 3
    sc.PhotometricInterpretation = "RGB"
    sc.PlanarConfiguration = 0
    sc.BitsAllocated, sc.BitsStored, sc.HighBit, sc.PixelRepresentation = 8, 8, 7, 0
    sc.BurnedInAnnotation = "YES"


def build_secondary_capture(
    source: Dataset,
    values: NDArray[np.floating],
    bmode: NDArray[np.floating],
    *,
    model: ModelInfo,
    frame: int = 0,
    scale: tuple[float, float] | None = None,
    sd: NDArray[np.floating] | None = None,
    sd_threshold: float | None = None,
    out_of_distribution: bool = False,
    scale_source: str | None = None,
) -> Dataset:
    """Build the colour Secondary Capture of one processed source frame.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        The source instance (only its header is read; it is not changed).
    values : numpy.ndarray
        ``(rows, columns)`` predicted values in ``model.unit`` on the region of interest.
    bmode : numpy.ndarray
        ``(rows, columns)`` grey B-mode of the same region, 0-255.
    model : ModelInfo
        Name, version, quantity, unit and colour-bar range of the model.
    frame : int
        0-based index of the frame in the source instance.
    scale : tuple of float, optional
        Colour-bar range; default ``model.colour_bar``.
    sd : numpy.ndarray, optional
        ``(rows, columns)`` per-pixel standard deviation of ``values``; with ``sd_threshold``,
        pixels above it are hatched grey instead of coloured, and a legend says so.
    sd_threshold : float, optional
        Standard deviation (in ``model.unit``) above which colour is withheld.
    out_of_distribution : bool
        Burn in the banner "OUTSIDE THE MODEL'S TRAINING DATA" (and say it in Image Comments).
    scale_source : str, optional
        Where ``scale`` came from, said in the Derivation Description.

    Returns
    -------
    pydicom.dataset.Dataset
        An RGB, derived Secondary Capture in the source's study with the warning burned in
        (Burned In Annotation YES) and written in Image Comments and Derivation Description.
        NaN values (outside a sector probe's fan) get no colour; there the B-mode is black.
    """
    scale = tuple(model.colour_bar) if scale is None else scale
    uncertain = threshold = legend = None
    if sd is not None and sd_threshold is not None:
        uncertain, threshold = sd, sd_threshold  # compared in the kernel, pixel by pixel
        legend = f"hatched grey: uncertain, sd > {format_value(sd_threshold)} {model.unit}"
    pixel_data, shape = capture_pixels(
        bmode,
        values,
        scale,
        title=capture_title(model),
        unit=model.unit,
        uncertain=uncertain,
        threshold=threshold,
        legend=legend,
        banner=OOD_BANNER if out_of_distribution else None,
    )
    now = datetime.datetime.now()
    elements = {
        BaseTag(tag): encoded.raw(tag, vr, encoded.value_bytes(vr, value))
        for tag, vr, value in (
            (0x00181012, "DA", now.strftime("%Y%m%d")),  # Date/Time of Secondary Capture
            (0x00181014, "TM", now.strftime("%H%M%S.%f")),
            # Patient Orientation, Type 2: empty for most ultrasound
            (0x00200020, "CS", _patient_orientation(source)),
            (0x00280010, "US", shape[0]),
            (0x00280011, "US", shape[1]),
        )
    }
    elements.update(lossy_elements(source))
    if scale_source is not None:  # after what the header's template says
        described = scale_description(scale, model.unit, scale_source)
        text = f"{derivation_description(model_key(model))} {described}"[:1024]
        elements[BaseTag(0x00082111)] = encoded.text(0x00082111, "ST", text, source)
    if out_of_distribution:
        text = f"{WARNING} - {OOD_BANNER}"[:10240]
        elements[BaseTag(0x00204000)] = encoded.text(0x00204000, "LT", text, source)
    elements[BaseTag(0x7FE00010)] = encoded.buffer_element(0x7FE00010, "OB", pixel_data)  # 8 bits
    return new_derived(
        source,
        model,
        sop_class_uid=SECONDARY_CAPTURE_STORAGE,
        kind="sc",
        frame=frame,
        fixed=_fixed_attributes,
        elements=elements,
    )

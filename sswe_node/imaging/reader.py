"""One call from a DICOM instance to what the model and the training toolkit need."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from struct import error as struct_error
from typing import BinaryIO

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from sswe_node.errors import (
    CorruptDicomError,
    DicomInputError,
    ElastogramDecodeError,
    ScaleMismatchError,
    UnsupportedLayoutError,
)
from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.colour_bar import grey_levels
from sswe_node.imaging.elastogram import (
    decode_elastogram,
    read_ssi_quantification,
    sample_colour_bar,
)
from sswe_node.imaging.frame_layout import FrameLayout, Layout
from sswe_node.imaging.grid import from_grid, grid_spacing_mm, to_grid, touched_cells
from sswe_node.imaging.layout import analyse_layout
from sswe_node.imaging.marks import fill_masked, graphics_marks, outside_fan, wedge_mask
from sswe_node.imaging.pixels import (
    LAZY_PIXEL_BYTES,
    check_ultrasound,
    decode_frames_native,
    frame_count,
    select_frames,
)
from sswe_node.imaging.regions import GREY_BAR, Region, read_regions
from sswe_node.imaging.scale import ScaleSetting, as_setting, choose_scale
from sswe_node.imaging.scale_labels import BarLabels, read_bar_labels
from sswe_node.imaging.strain import strain_bar_reason
from sswe_node.quantities import QUANTITY_UNITS

logger = logging.getLogger(__name__)

__all__ = ["FrameReading", "read_instance", "read_file", "QUANTITY_UNITS"]


@dataclass
class FrameReading:
    """Everything read from one frame.

    Attributes
    ----------
    frame : int
        Frame index in the source instance.
    layout : Layout
        ``Layout.DUAL_SWE`` or ``Layout.BMODE``.
    bmode : numpy.ndarray
        float32 ``(h, w)`` grey 0-255: the plain B-mode region of interest in source pixels.
    roi : PixelBox
        Where ``bmode`` lies in the source frame.
    panel : PixelBox
        The panel ``bmode`` was taken from.
    overlay_roi : PixelBox or None
        The SWE box in the elastogram panel (dual only).
    spacing_mm : tuple of float or None
        ``(row, column)`` spacing of source pixels in mm.
    swe : numpy.ndarray or None
        float32 ``(h, w)`` decoded elastogram in ``unit``, NaN where void.
    confidence : numpy.ndarray or None
        float32 ``(h, w)`` 0-1.
    quantity, unit : str or None
        ``"youngs-modulus"``/``"kPa"`` or ``"shear-wave-speed"``/``"m/s"``.
    scale : tuple of float or None
        ``(min, max)`` of the colour bar used for decoding (see :mod:`sswe_node.imaging.scale`).
    scale_source : str or None
        Where ``scale`` came from: ``"private-data"``, ``"image-labels"``, ``"config"``,
        ``"manifest"`` or ``"option"``; None without a scale.
    scale_labels : BarLabels or None
        The range read beside the colour bar, when readable.
    marks : numpy.ndarray or None
        Boolean ``(h, w)`` like ``bmode``: burned-in marks (rings, calipers, crosses, text,
        cursors, a grey wedge) in the B-mode ROI or the SWE box (:mod:`~sswe_node.imaging.marks`):
        confidence 0 in the labels, filled from their surroundings in :meth:`model_input`.
    outside : numpy.ndarray or None
        Boolean ``(h, w)``: outside a sector probe's fan (not tissue); None for full images.
    overlay_panel, colour_bar : PixelBox or None
        The elastogram panel and the colour bar (dual only).
    opacity : float or None
        Estimated overlay opacity (dual only).
    swe_source : str or None
        ``"colour-bar"`` or ``"ssi-private"``.
    layout_source : str
        ``"regions"`` or ``"pixels"``.
    notes : list of str
        What could not be done (e.g. no scale given), for logs and reports.
    grid : tuple of int
        The default model grid of the regridding methods.
    """

    frame: int
    layout: Layout
    bmode: NDArray[np.float32]
    roi: PixelBox
    panel: PixelBox
    overlay_roi: PixelBox | None = None
    spacing_mm: tuple[float, float] | None = None
    swe: NDArray[np.float32] | None = None
    confidence: NDArray[np.float32] | None = None
    quantity: str | None = None
    unit: str | None = None
    scale: tuple[float, float] | None = None
    overlay_panel: PixelBox | None = None
    colour_bar: PixelBox | None = None
    opacity: float | None = None
    swe_source: str | None = None
    layout_source: str = "pixels"
    notes: list[str] = field(default_factory=list)
    grid: tuple[int, int] = (96, 64)
    scale_source: str | None = None
    scale_labels: BarLabels | None = None
    marks: NDArray[np.bool_] | None = None
    outside: NDArray[np.bool_] | None = None

    def model_input(self, grid: tuple[int, int] | None = None) -> NDArray[np.float32]:
        """Return the B-mode ROI on the model grid, scaled from 0-255 to 0-1 (float32).

        ``grid`` defaults to the one given to :func:`read_instance`. Grid cells touched by
        burned-in marks are filled from the cells around them; outside a fan they are 0.
        """
        grid = grid or self.grid
        out = to_grid(self.bmode, grid) * np.float32(1.0 / 255.0)
        if self.outside is not None:  # black first: marks there are filled with black
            out[to_grid(self.outside.astype(np.float32), grid) > 0.5] = 0.0
        if self.marks is not None and self.marks.any():
            out = fill_masked(out, touched_cells(self.marks, grid))
        return np.clip(out, 0.0, 1.0)

    def label_on_grid(
        self, grid: tuple[int, int] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Return the elastogram (in ``unit``, NaN where void) and its confidence on the grid.

        Raises
        ------
        ElastogramDecodeError
            The frame has no decoded elastogram (a B-mode frame, or no scale was given).
        """
        if self.swe is None or self.confidence is None:
            raise ElastogramDecodeError(
                "this frame has no decoded elastogram (B-mode frame, or no colour bar scale)"
            )
        values = to_grid(self.swe, grid or self.grid)
        confidence = to_grid(self.confidence, grid or self.grid)
        confidence[np.isnan(values)] = 0.0
        return values, np.clip(confidence, 0.0, 1.0)

    def grid_spacing_mm(self, grid: tuple[int, int] | None = None) -> tuple[float, float] | None:
        """Return the ``(row, column)`` size of one model-grid cell in mm (None if unknown)."""
        return grid_spacing_mm(self.bmode.shape, self.spacing_mm, grid or self.grid)

    def to_source(self, on_grid: NDArray[np.floating]) -> NDArray[np.float32]:
        """Return a model-grid array (e.g. a prediction) on the ROI's source pixels."""
        return from_grid(on_grid, self.bmode.shape)


def read_instance(
    ds: Dataset,
    grid: tuple[int, int] = (96, 64),
    scale: tuple[float, float] | ScaleSetting | None = None,
    max_frames: int | None = 16,
    *,
    quantity: str = "youngs-modulus",
    opacity: float | None = None,
    max_pixels: int | None = None,
    decode: bool = True,
    read_labels: bool = True,
    find_marks: bool = True,
) -> list[FrameReading]:
    """Read an ultrasound instance: decode, find the layout, decode the elastogram.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The instance (with pixel data).
    grid : tuple of int
        ``(rows, cols)`` model grid: the default of :meth:`FrameReading.model_input`,
        :meth:`FrameReading.label_on_grid` and :meth:`FrameReading.grid_spacing_mm`, where the
        regridding happens (on demand).
    scale : tuple of float or ScaleSetting, optional
        The colour bar's ``(min, max)`` (bottom, top) in the quantity's unit as the caller
        knows it: a :class:`~sswe_node.imaging.scale.ScaleSetting` says where it came from
        and whether it was set explicitly; a plain pair counts as an explicit option. The
        range printed beside the bar wins over a fallback and refuses the frame
        (``scale-mismatch``) when it disagrees with an explicit scale (see
        :mod:`sswe_node.imaging.scale`). With no scale at all, dual captures are still read
        (B-mode, boxes) but ``swe`` is None unless the SSI private data gives values.
    max_frames : int or None
        Read at most this many frames of a multi-frame instance, evenly spaced with the
        first and the last included; None reads all. Frames whose layout is unsupported or
        whose elastogram cannot be decoded are left out (logged); the error of the first is
        raised when no frame is readable.
    quantity : str
        ``"youngs-modulus"`` (kPa) or ``"shear-wave-speed"`` (m/s).
    opacity : float, optional
        Known overlay opacity (estimated per frame otherwise).
    max_pixels : int, optional
        Refuse instances with more pixels (rows x columns x frames).
    decode : bool
        Decode the elastogram (False: only choose the scale, e.g. for inference, which needs
        the B-mode alone).
    read_labels : bool
        Read the colour bar's printed range (OCR, cached per bar); False trusts ``scale``.
    find_marks : bool
        Find burned-in marks and the outside of a fan (``FrameReading.marks``/``outside``);
        False leaves them None (the reading of earlier versions).

    Returns
    -------
    list of FrameReading
        One per frame read, in frame order.

    Raises
    ------
    sswe_node.errors.DicomInputError
        A typed subclass: ``NotUltrasoundError``, ``CorruptDicomError``,
        ``UnsupportedTransferSyntaxError``, ``PixelDecodeError``, ``ImageTooLargeError``,
        ``UnsupportedLayoutError``, ``ElastogramDecodeError`` or ``ScaleMismatchError``.

    Examples
    --------
    >>> import pydicom
    >>> from pydicom.data import get_testdata_file
    >>> from sswe_node.imaging import read_instance
    >>> ds = pydicom.dcmread(get_testdata_file("gdcm-US-ALOKA-16.dcm"))
    >>> (reading,) = read_instance(ds)
    >>> reading.layout.value, reading.model_input().shape
    ('bmode', (96, 64))
    """
    if quantity not in QUANTITY_UNITS:
        raise ValueError(f"quantity must be one of {sorted(QUANTITY_UNITS)}, got {quantity!r}")
    setting = as_setting(scale)
    check_ultrasound(ds, max_pixels=max_pixels)
    regions = read_regions(ds)
    pixel_spacing = _pixel_spacing(ds)
    readings = []
    skipped: list[DicomInputError] = []
    indices = select_frames(frame_count(ds), max_frames)
    for index, frame in zip(indices, decode_frames_native(ds, indices), strict=True):
        try:
            found = analyse_layout(frame, regions, pixel_spacing_mm=pixel_spacing)
            reading = _read_frame(
                ds, index, frame, found, setting, quantity, opacity, decode, read_labels
            )
            if find_marks:
                _find_marks(reading, frame, regions)
            reading.grid = (int(grid[0]), int(grid[1]))
            readings.append(reading)
        except (UnsupportedLayoutError, ElastogramDecodeError, ScaleMismatchError) as exc:
            logger.info("frame %d skipped: %s", index, exc)
            skipped.append(exc)
    if not readings:
        raise skipped[0]
    return readings


def _read_frame(
    ds: Dataset,
    index: int,
    frame: NDArray[np.uint8] | NDArray[np.float32],
    found: FrameLayout,
    setting: ScaleSetting | None,
    quantity: str,
    opacity: float | None,
    decode: bool,
    read_labels: bool,
) -> FrameReading:
    reading = FrameReading(
        frame=index,
        layout=found.layout,
        bmode=np.ascontiguousarray(grey_levels(frame[found.roi.slices]), dtype=np.float32),
        roi=found.roi,
        panel=found.panel,
        overlay_roi=found.overlay_roi,
        spacing_mm=found.spacing_mm,
        overlay_panel=found.overlay_panel,
        colour_bar=found.colour_bar,
        layout_source=found.source,
    )
    if found.layout is not Layout.DUAL_SWE:
        return reading
    assert found.overlay_roi is not None and found.colour_bar is not None
    strain = strain_bar_reason(frame, found.colour_bar)  # relative strain is never kPa
    if strain is not None:
        raise UnsupportedLayoutError(strain)
    reading.quantity = quantity
    reading.unit = QUANTITY_UNITS[quantity]
    raw = read_ssi_quantification(ds, (found.overlay_roi.height, found.overlay_roi.width))
    labels = read_bar_labels(frame, found.colour_bar) if read_labels else None
    choice = choose_scale(
        unit=reading.unit, setting=setting, labels=labels, private=raw is not None
    )
    reading.scale, reading.scale_source, reading.scale_labels = (
        choice.scale,
        choice.source,
        labels,
    )
    if raw is not None:
        reading.swe, reading.confidence = raw
        reading.swe_source = "ssi-private"
        return reading
    if choice.scale is None:
        reading.notes.append("no colour bar scale (no readable labels, none given)")
        logger.info("frame %d: no colour bar scale, elastogram not decoded", index)
        return reading
    if not decode:
        return reading
    scale = choice.scale
    bar = sample_colour_bar(frame[found.colour_bar.slices], scale)
    decoded = decode_elastogram(
        frame[found.overlay_roi.slices], reading.bmode, bar, opacity=opacity
    )
    reading.swe = decoded.values
    reading.confidence = decoded.confidence
    reading.opacity = decoded.opacity
    reading.swe_source = decoded.source
    return reading


def _find_marks(reading: FrameReading, frame: NDArray[np.floating], regions: list[Region]) -> None:
    """Find burned-in marks and the outside of a fan; take them out of the labels."""
    roi = reading.roi
    pixels = frame[roi.slices]
    wedges = tuple(r.box.shifted(-roi.top, -roi.left) for r in regions if r.data_type == GREY_BAR)
    dual = reading.overlay_roi is not None
    # A dual display draws its rings, calipers and crosses on both panels: white ones are
    # found in the elastogram panel (white stands out of every colour, and few pixels are
    # that light there), coloured ones in the plain panel (any colour in a grey image).
    marks = graphics_marks(pixels, grey_image=True, white=not dual)
    if reading.layout is Layout.BMODE or wedges:  # a dual's ROI is the SWE box's copy
        marks |= wedge_mask(reading.bmode, wedges)
    if dual:
        box = frame[reading.overlay_roi.slices]
        if box.shape[:2] == marks.shape:  # the SWE box and its copy: marks set in place
            graphics_marks(box, grey_image=False, out=marks)
        else:
            rows, cols = min(box.shape[0], marks.shape[0]), min(box.shape[1], marks.shape[1])
            marks[:rows, :cols] |= graphics_marks(box, grey_image=False)[:rows, :cols]
    reading.marks = marks
    reading.outside = outside_fan(reading.bmode)
    private = reading.swe_source == "ssi-private"  # stored values: marks never touched them
    if not private and reading.confidence is not None and reading.confidence.shape == marks.shape:
        # the values stay (a void is where the scanner shows no colour); the labels lose them
        hidden = marks if reading.outside is None else marks | reading.outside
        if hidden.any():
            reading.confidence = np.where(hidden, np.float32(0), reading.confidence)


def read_file(source: str | os.PathLike[str] | BinaryIO) -> Dataset:
    """Read a DICOM file (Part 10, or a bare dataset) with a typed error when it is not one.

    Parameters
    ----------
    source : path-like or binary file
        The file.

    Returns
    -------
    pydicom.dataset.Dataset
        Read from a path, a Pixel Data larger than
        :data:`~sswe_node.imaging.pixels.LAZY_PIXEL_BYTES` stays in the file (deferred):
        :func:`read_instance` then reads and decodes only the frames it uses.

    Raises
    ------
    CorruptDicomError
        The file is not DICOM, is truncated, or cannot be parsed.
    """
    defer = LAZY_PIXEL_BYTES if isinstance(source, str | os.PathLike) else None
    try:
        ds = pydicom.dcmread(source, force=False, defer_size=defer)
        raw = ds.get_item("PixelData", keep_deferred=True)
        if not (isinstance(raw, RawDataElement) and raw.value is None):  # not deferred
            ds.get("PixelData")  # parse up to the pixel data so that truncation shows here
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(source, force=True)
            if "SOPClassUID" not in ds and "PixelData" not in ds:
                raise CorruptDicomError("the file is not DICOM (no DICOM preamble or header)")
            return ds
        except CorruptDicomError:
            raise
        except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
            raise CorruptDicomError("the file is not DICOM (no DICOM preamble or header)") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, struct_error) as exc:
        raise CorruptDicomError(f"the DICOM file is truncated or corrupt: {exc}") from None
    return ds


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if (
                value is not None
                and len(value) == 2
                and float(value[0]) > 0
                and float(value[1]) > 0
            ):
                return (float(value[0]), float(value[1]))
        except (TypeError, ValueError):
            continue
    return None

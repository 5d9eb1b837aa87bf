"""Small synthetic dual SWE captures with known truth (independent of training.simulate).

The geometry here deliberately differs from the simulator's (panel sizes, bar place, frame size)
so that the reading core is not tuned to one layout. ``make_capture`` is imported by the other
``test_imaging_*`` modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from sswe_node.imaging import Layout, read_instance
from sswe_node.imaging.colormap import render_colour_bar, values_to_rgb

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


@dataclass
class Capture:
    """A synthetic capture and its truth."""

    ds: Dataset
    truth: np.ndarray  # values in the SWE box, NaN where void
    overlay_box: tuple[int, int, int, int]  # top, left, bottom, right
    plain_box: tuple[int, int, int, int]
    scale: tuple[float, float]


def _speckle(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    raw = rng.rayleigh(1.0, size=shape)
    smooth = ndimage.gaussian_filter(raw, (1.5, 0.8))
    structure = ndimage.gaussian_filter(rng.normal(size=shape), 12)
    img = smooth * (1.0 + 2.5 * (structure - structure.min()) / np.ptp(structure))
    return np.clip(img / np.percentile(img, 99) * 220.0, 0, 255)


def make_capture(
    *,
    seed: int = 0,
    opacity: float = 1.0,
    arrangement: str = "left-right",
    regions: bool = True,
    scale: tuple[float, float] = (0.0, 80.0),
    frames: int = 1,
    voids: bool = True,
    lut: np.ndarray | None = None,
    elastogram_first: bool = True,
    bar: str = "vertical",
) -> Capture:
    """Build a dual SWE capture: elastogram panel + plain B-mode panel + colour bar.

    ``elastogram_first=False`` puts the elastogram in the right (or bottom) panel;
    ``bar="horizontal"`` draws the colour bar lying below the panels (minimum on the left).
    """
    rng = np.random.default_rng(seed)
    ph, pw = 300, 330  # panel size
    if arrangement == "left-right":
        shape = (440, 800)
        o_origin, p_origin = (70, 30), (70, 30 + pw + 14)
        bar_box = (120, 742, 120 + 230, 742 + 14)
    else:
        shape = (720, 520)
        o_origin, p_origin = (40, 60), (40 + ph + 20, 60)
        bar_box = (200, 460, 200 + 260, 460 + 12)
    if bar == "horizontal":
        bar_box = (shape[0] - 40, 120, shape[0] - 40 + 14, 120 + 240)
    elif bar != "vertical":
        raise ValueError(f"unknown bar orientation {bar!r}")
    if not elastogram_first:
        o_origin, p_origin = p_origin, o_origin
    bmode = _speckle(rng, (ph, pw))
    # SWE box inside the elastogram panel, with a smooth stiffness field and voids
    box = (40, 60, 40 + 170, 60 + 200)  # panel coordinates
    bh, bw = box[2] - box[0], box[3] - box[1]
    yy, xx = np.mgrid[0:bh, 0:bw]
    field = 20.0 + 25.0 * np.exp(-(((yy - 80) / 40.0) ** 2 + ((xx - 120) / 50.0) ** 2))
    field += 8.0 * np.sin(xx / 23.0) + rng.normal(0, 0.5, size=(bh, bw))
    field = np.clip(field, scale[0] + 1, scale[1] - 1)
    if voids:
        field[(yy - 30) ** 2 + (xx - 40) ** 2 < 15**2] = np.nan
    rgb = np.zeros(shape + (3,), dtype=np.float64)
    for origin in (o_origin, p_origin):
        rgb[origin[0] : origin[0] + ph, origin[1] : origin[1] + pw] = bmode[..., None]
    colour = values_to_rgb(field, *scale, lut=lut).astype(np.float64)
    under = bmode[box[0] : box[2], box[1] : box[3], None]
    blended = opacity * colour + (1.0 - opacity) * under
    blended[np.isnan(field)] = under[np.isnan(field)]
    top, left = o_origin[0] + box[0], o_origin[1] + box[1]
    rgb[top : top + bh, left : left + bw] = blended
    # white box outline, as scanners draw it
    rgb[top - 1, left - 1 : left + bw + 1] = 255
    rgb[top + bh, left - 1 : left + bw + 1] = 255
    rgb[top - 1 : top + bh + 1, left - 1] = 255
    rgb[top - 1 : top + bh + 1, left + bw] = 255
    bar_h, bar_w = bar_box[2] - bar_box[0], bar_box[3] - bar_box[1]
    if bar == "vertical":
        bar_rgb = render_colour_bar(bar_h, bar_w, lut=lut)
    else:  # the vertical bar turned a quarter clockwise: minimum on the left
        bar_rgb = render_colour_bar(bar_w, bar_h, lut=lut)[::-1].transpose(1, 0, 2)
    rgb[bar_box[0] : bar_box[2], bar_box[1] : bar_box[3]] = bar_rgb
    rgb[10:22, 20:200] = 230  # header "text"
    pixels = np.round(rgb).astype(np.uint8)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.Modality = "US"
    ds.PatientID = "SYNTH"
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
        pixels = np.stack([pixels] * frames)
    ds.PixelData = pixels.tobytes()
    if regions:
        items = []
        for origin in (o_origin, p_origin):
            item = Dataset()
            item.RegionSpatialFormat = 1
            item.RegionDataType = 1
            item.RegionFlags = 0
            item.RegionLocationMinX0 = origin[1]
            item.RegionLocationMinY0 = origin[0]
            item.RegionLocationMaxX1 = origin[1] + pw - 1
            item.RegionLocationMaxY1 = origin[0] + ph - 1
            item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
            item.PhysicalDeltaX = item.PhysicalDeltaY = 0.016
            items.append(item)
        ds.SequenceOfUltrasoundRegions = Sequence(items)
    overlay_box = (top, left, top + bh, left + bw)
    dy, dx = p_origin[0] - o_origin[0], p_origin[1] - o_origin[1]
    plain_box = (top + dy, left + dx, top + bh + dy, left + bw + dx)
    return Capture(ds, field.astype(np.float32), overlay_box, plain_box, scale)


def decoding_errors(capture: Capture, **kwargs: object) -> tuple[float, float]:
    """Median absolute error over pixels valid in both, and the void agreement fraction."""
    (reading,) = read_instance(capture.ds, scale=capture.scale, **kwargs)
    assert reading.layout is Layout.DUAL_SWE
    ob = reading.overlay_roi
    t, l_, b, r = capture.overlay_box
    # compare on the intersection of the found box and the true box
    top, left = max(t, ob.top), max(l_, ob.left)
    bottom, right = min(b, ob.bottom), min(r, ob.right)
    truth = capture.truth[top - t : bottom - t, left - l_ : right - l_]
    got = reading.swe[top - ob.top : bottom - ob.top, left - ob.left : right - ob.left]
    both = np.isfinite(truth) & np.isfinite(got)
    agree = float(np.mean(np.isfinite(truth) == np.isfinite(got)))
    return float(np.median(np.abs(got[both] - truth[both]))), agree


@pytest.mark.parametrize("regions", [True, False])
@pytest.mark.parametrize("arrangement", ["left-right", "top-bottom"])
def test_synthetic_dual_capture_is_found(arrangement: str, regions: bool) -> None:
    cap = make_capture(arrangement=arrangement, regions=regions, seed=3)
    (reading,) = read_instance(cap.ds, scale=cap.scale)
    assert reading.layout is Layout.DUAL_SWE
    assert reading.layout_source == ("regions" if regions else "pixels")
    found = reading.overlay_roi
    assert abs(found.top - cap.overlay_box[0]) <= 1 and abs(found.left - cap.overlay_box[1]) <= 1
    assert abs(found.bottom - cap.overlay_box[2]) <= 1
    assert abs(found.right - cap.overlay_box[3]) <= 1
    shift = (reading.roi.top - found.top, reading.roi.left - found.left)
    true_shift = (cap.plain_box[0] - cap.overlay_box[0], cap.plain_box[1] - cap.overlay_box[1])
    assert shift == true_shift
    assert reading.bmode.shape == (found.height, found.width)
    if regions:
        assert reading.spacing_mm == pytest.approx((0.16, 0.16))
    else:  # no regions and no Pixel Spacing: the spacing is unknown
        assert reading.spacing_mm is None

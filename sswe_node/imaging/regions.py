"""The Sequence of Ultrasound Regions (PS3.3 C.8.5.5): its codes and reading it.

The codes are shared with the phantom simulator (``training.simulate``), which writes the
regions this module reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from sswe_node.errors import CorruptDicomError
from sswe_node.imaging.boxes import PixelBox

__all__ = [
    "Region",
    "read_regions",
    "SPATIAL_FORMATS",
    "DATA_TYPES",
    "SPATIAL_NONE",
    "SPATIAL_2D",
    "SPATIAL_M_MODE",
    "SPATIAL_SPECTRAL",
    "SPATIAL_WAVEFORM",
    "SPATIAL_GRAPHICS",
    "TISSUE",
    "COLOUR_FLOW",
    "GREY_BAR",
    "COLOUR_BAR",
    "DOPPLER_TYPES",
    "UNITS_NONE",
    "UNITS_CM",
]

# Region Spatial Format (0018,6012), PS3.3 C.8.5.5.1.1
SPATIAL_NONE, SPATIAL_2D, SPATIAL_M_MODE, SPATIAL_SPECTRAL = 0x0000, 0x0001, 0x0002, 0x0003
SPATIAL_WAVEFORM, SPATIAL_GRAPHICS = 0x0004, 0x0005
SPATIAL_FORMATS = {0: "none", 1: "2D", 2: "M-mode", 3: "spectral", 4: "waveform", 5: "graphics"}

# Region Data Type (0018,6014), PS3.3 C.8.5.5.1.2. The standard has no elastography code: SWE
# scanners declare their SWE box as colour flow, the colour-coded overlay type.
TISSUE, COLOUR_FLOW, GREY_BAR, COLOUR_BAR = 0x0001, 0x0002, 0x000D, 0x000E
DATA_TYPES = {
    0: "none",
    1: "tissue",
    2: "colour flow Doppler",
    3: "PW spectral Doppler",
    4: "CW spectral Doppler",
    5: "Doppler mean trace",
    6: "Doppler mode trace",
    7: "Doppler max trace",
    8: "volume trace",
    10: "ECG trace",
    11: "pulse trace",
    12: "phonocardiogram trace",
    13: "grey bar",
    14: "colour bar",
    15: "integrated backscatter",
    16: "area trace",
    17: "d(area)/dt",
    18: "other physiological input",
}
#: Spectral Doppler and Doppler traces: never processed. Colour flow (2) is judged with the
#: pixels, since SWE scanners declare their SWE box that way.
DOPPLER_TYPES = frozenset({3, 4, 5, 6, 7, 8})

# Physical Units X/Y Direction (0018,6024/6026), PS3.3 C.8.5.5.1.15
UNITS_NONE, UNITS_CM = 0x0000, 0x0003
_UNITS_TO_MM = {UNITS_CM: 10.0}


@dataclass(frozen=True)
class Region:
    """One item of the Sequence of Ultrasound Regions, reduced to what reading needs."""

    box: PixelBox
    spatial_format: int
    data_type: int
    spacing_mm: tuple[float, float] | None

    @property
    def description(self) -> str:
        """Human-readable kind, e.g. ``"2D colour flow Doppler"``."""
        fmt = SPATIAL_FORMATS.get(self.spatial_format, f"format {self.spatial_format}")
        kind = DATA_TYPES.get(self.data_type, f"data type {self.data_type:#x}")
        return f"{fmt} {kind} (Region Data Type {self.data_type:#x})"


def read_regions(ds: Dataset) -> list[Region]:
    """Read the Sequence of Ultrasound Regions (0018,6011); empty when absent.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The instance.

    Returns
    -------
    list of Region
        Regions in the order stored.

    Raises
    ------
    CorruptDicomError
        A region lacks its location or type.
    """
    regions = []
    for i, item in enumerate(ds.get("SequenceOfUltrasoundRegions") or []):
        try:
            box = PixelBox(
                int(item.RegionLocationMinY0),
                int(item.RegionLocationMinX0),
                int(item.RegionLocationMaxY1) + 1,
                int(item.RegionLocationMaxX1) + 1,
            )
            spatial = int(item.get("RegionSpatialFormat") or 0)
            data_type = int(item.get("RegionDataType") or 0)
        except (AttributeError, TypeError, ValueError) as exc:
            raise CorruptDicomError(
                f"Sequence of Ultrasound Regions item {i + 1} is incomplete: {exc}"
            ) from None
        spacing = None
        unit_x = item.get("PhysicalUnitsXDirection")
        unit_y = item.get("PhysicalUnitsYDirection")
        dx, dy = item.get("PhysicalDeltaX"), item.get("PhysicalDeltaY")
        if unit_x in _UNITS_TO_MM and unit_y in _UNITS_TO_MM and dx and dy:
            spacing = (abs(float(dy)) * _UNITS_TO_MM[unit_y], abs(float(dx)) * _UNITS_TO_MM[unit_x])
        regions.append(Region(box, spatial, data_type, spacing))
    return regions

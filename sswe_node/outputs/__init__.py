"""Derived DICOM objects: the Parametric Map and the colour Secondary Capture (plain pydicom)."""

from sswe_node.outputs.derived import ModelInfo
from sswe_node.outputs.geometry import Box, source_spacing_mm
from sswe_node.outputs.labels import WARNING
from sswe_node.outputs.parametric_map import MapPixels, build_parametric_map, map_pixels
from sswe_node.outputs.secondary_capture import build_secondary_capture

__all__ = [
    "Box",
    "MapPixels",
    "ModelInfo",
    "WARNING",
    "build_parametric_map",
    "build_secondary_capture",
    "map_pixels",
    "source_spacing_mm",
]

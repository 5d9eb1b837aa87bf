"""Reading core: DICOM ultrasound frames to B-mode, elastogram values and the model grid."""

import logging

from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.frame_layout import Layout
from sswe_node.imaging.reader import FrameReading, read_file, read_instance

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["read_instance", "read_file", "FrameReading", "Layout", "PixelBox"]

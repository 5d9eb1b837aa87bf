"""sswe-node: synthetic shear-wave elastography for DICOM networks."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

"""DICOM UIDs shared by the node and the training toolkit: storage classes, transfer syntaxes."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

__all__ = [
    "STORAGE_TRANSFER_SYNTAXES",
    "ULTRASOUND_IMAGE_CLASSES",
    "SECONDARY_CAPTURE_CLASSES",
    "SECONDARY_CAPTURE_PREFIX",
    "ENHANCED_US_VOLUME",
]

#: Transfer syntaxes accepted when receiving instances (C-STORE to the node, C-GET
#: sub-operations of the dataset builder): what ultrasound scanners and archives send, all
#: decodable by the reading core. Uncompressed first, so that it is preferred.
STORAGE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEG2000,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

#: Ultrasound image storage classes (current and retired), single and multi-frame.
ULTRASOUND_IMAGE_CLASSES: tuple[UID, ...] = (
    UID("1.2.840.10008.5.1.4.1.1.6.1"),  # Ultrasound Image Storage
    UID("1.2.840.10008.5.1.4.1.1.3.1"),  # Ultrasound Multi-frame Image Storage
    UID("1.2.840.10008.5.1.4.1.1.6"),  # Ultrasound Image Storage (retired)
    UID("1.2.840.10008.5.1.4.1.1.3"),  # Ultrasound Multi-frame Image Storage (retired)
)

#: Secondary Capture storage classes: scanners and PACS exports sometimes use them for captures.
SECONDARY_CAPTURE_CLASSES: tuple[UID, ...] = (
    UID("1.2.840.10008.5.1.4.1.1.7"),  # Secondary Capture Image Storage
    UID("1.2.840.10008.5.1.4.1.1.7.1"),  # Multi-frame Single Bit Secondary Capture
    UID("1.2.840.10008.5.1.4.1.1.7.2"),  # Multi-frame Grayscale Byte Secondary Capture
    UID("1.2.840.10008.5.1.4.1.1.7.3"),  # Multi-frame Grayscale Word Secondary Capture
    UID("1.2.840.10008.5.1.4.1.1.7.4"),  # Multi-frame True Color Secondary Capture
)

#: Prefix shared by every Secondary Capture class UID.
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

#: Enhanced US Volume Storage (3D ultrasound), which the reading core refuses.
ENHANCED_US_VOLUME = UID("1.2.840.10008.5.1.4.1.1.6.2")

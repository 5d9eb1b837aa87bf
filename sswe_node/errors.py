"""One base error for the package and the few typed errors that callers act on."""

from __future__ import annotations


class SsweError(Exception):
    """Base class of every error raised on purpose by sswe-node.

    Attributes
    ----------
    reason : str
        A short, stable, machine-readable reason code (stored in the case store and
        used in metrics), e.g. ``"unsupported-layout"``.
    """

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(SsweError):
    """Invalid or unreadable configuration (names the key and the file)."""

    reason = "config"


class DicomInputError(SsweError):
    """An input instance cannot be used; base of the reading errors."""

    reason = "bad-input"


class CorruptDicomError(DicomInputError):
    """The file is not readable DICOM, or required attributes are missing or broken."""

    reason = "corrupt"


class NotUltrasoundError(DicomInputError):
    """The instance is not an ultrasound image or a secondary capture of one (e.g. CT)."""

    reason = "wrong-modality"


class UnsupportedTransferSyntaxError(DicomInputError):
    """The pixel data uses a transfer syntax that cannot be decoded here."""

    reason = "unsupported-syntax"


class PixelDecodeError(DicomInputError):
    """The pixel data could not be decoded (truncated, corrupt or inconsistent)."""

    reason = "pixel-decode"


class ImageTooLargeError(DicomInputError):
    """The image exceeds the configured size limit."""

    reason = "too-large"


class UnsupportedLayoutError(DicomInputError):
    """The frame layout is not a dual SWE capture nor a full-screen B-mode (e.g. Doppler)."""

    reason = "unsupported-layout"


class ElastogramDecodeError(DicomInputError):
    """A dual capture's colour-coded elastogram or colour bar could not be decoded."""

    reason = "elastogram-decode"


class ScaleMismatchError(DicomInputError):
    """The colour bar's printed range disagrees with the scale explicitly configured or given."""

    reason = "scale-mismatch"


class ModelError(SsweError):
    """A packaged model is missing, malformed or fails its checksum."""

    reason = "model"

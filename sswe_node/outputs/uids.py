"""Deterministic UIDs for derived objects, so that a resend replaces rather than duplicates."""

from __future__ import annotations

import hashlib

from pydicom.dataset import Dataset

__all__ = [
    "UID_SALT_ATTRIBUTE",
    "derived_uid",
    "derived_series_uid",
    "derived_instance_uid",
    "frame_of_reference_uid",
    "source_study_uid",
    "source_series_uid",
]


UID_SALT_ATTRIBUTE = "sswe_uid_salt"
"""A source dataset attribute (Python, not DICOM) that, when set, enters the derived instance
and frame-of-reference UIDs: the node sets it to the content hash of an instance received with
a SOP Instance UID already used by other content (``uid-conflict``), so that the two contents'
outputs never share a UID. Unset, the UIDs are as they always were."""


def _source_parts(source: Dataset) -> list[str]:
    salt = getattr(source, UID_SALT_ATTRIBUTE, "")
    return [str(source.SOPInstanceUID), *([str(salt)] if salt else [])]


def derived_uid(*parts: str) -> str:
    """Return a ``2.25.`` UID computed from ``parts`` (the same parts give the same UID).

    Parameters
    ----------
    *parts : str
        The entropy sources, e.g. a source UID, the model name and version and a kind.

    Returns
    -------
    str
        A valid UID of at most 64 characters.
    """
    if not parts or not all(isinstance(p, str) for p in parts):
        raise TypeError("derived_uid needs one or more strings")
    # A UUID-derived UID (PS3.5 B.2): 128 bits of a hash, as pydicom does with a prefix.
    digest = hashlib.sha256("\x1f".join(["sswe-node", *parts]).encode("utf-8")).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def source_study_uid(source: Dataset) -> str:
    """Return the source's Study Instance UID, or one derived from it when absent."""
    uid = str(source.get("StudyInstanceUID", "") or "")
    return uid or derived_uid(source_series_uid(source), "study")


def source_series_uid(source: Dataset) -> str:
    """Return the source's Series Instance UID, or one derived from the instance when absent."""
    uid = str(source.get("SeriesInstanceUID", "") or "")
    return uid or derived_uid(str(source.SOPInstanceUID), "series")


def derived_series_uid(source: Dataset, model_name: str, model_version: str, kind: str) -> str:
    """Return the Series Instance UID of the derived series.

    One derived series per source series, model (name and version) and ``kind``
    (``"pm"`` or ``"sc"``).
    """
    return derived_uid(source_series_uid(source), model_name, model_version, kind)


def derived_instance_uid(
    source: Dataset, frame: int, model_name: str, model_version: str, kind: str
) -> str:
    """Return the SOP Instance UID of the object derived from one frame of ``source``."""
    return derived_uid(*_source_parts(source), str(frame), model_name, model_version, kind)


def frame_of_reference_uid(source: Dataset) -> str:
    """Return the Frame of Reference UID of the plane geometry given to a source.

    Ultrasound sources rarely have a Frame of Reference, and when they do their patient
    geometry is not the pixel geometry written here, so a new one is always derived. It
    depends on the source instance only: every object derived from the same source (any
    model) shares it.
    """
    return derived_uid(*_source_parts(source), "frame-of-reference")

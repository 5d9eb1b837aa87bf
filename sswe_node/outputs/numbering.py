"""Series and instance numbers of derived objects (deterministic, from the source)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from sswe_node.outputs.geometry import is_multiframe

__all__ = ["derived_series_number", "derived_instance_number", "SERIES_OFFSETS"]

#: Added to the source Series Number so derived series sort after their source.
SERIES_OFFSETS = {"pm": 1000, "sc": 2000}


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def derived_series_number(source: Dataset, kind: str) -> int:
    """Return the Series Number of the derived series of ``kind`` (``"pm"`` or ``"sc"``)."""
    return SERIES_OFFSETS[kind] + abs(_int(source.get("SeriesNumber"), 0)) % 1000


def derived_instance_number(source: Dataset, frame: int) -> int:
    """Return the Instance Number of the object derived from ``frame`` of ``source``.

    Single-frame sources keep their Instance Number; frame ``f`` of a multi-frame source
    gets ``1000 * InstanceNumber + f + 1``.
    """
    number = max(_int(source.get("InstanceNumber"), 1), 1)
    if is_multiframe(source):
        return 1000 * number + frame + 1
    return number

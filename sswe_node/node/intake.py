"""What a worker checks before the pipeline: batches bounded by bytes, datasets that are DICOM.

A batch of received files is read whole (one ``dcmread`` each), so its size in bytes, not only
its count, bounds the worker's memory; and a file that parses but lacks the SOP UIDs (random
bytes behind a valid file meta header, a dataset without SOPInstanceUID) is ``corrupt``, not
another modality.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TypeVar

from pydicom import Dataset

Item = TypeVar("Item")


def split_by_bytes(
    items: Sequence[Item], paths: Sequence[str], max_bytes: int
) -> Iterator[list[Item]]:
    """Yield runs of ``items`` whose files (``paths``, in step) add up to at most ``max_bytes``.

    A file larger than ``max_bytes`` is a run of its own; ``max_bytes <= 0`` yields one run.
    A missing file counts as 0 bytes (reading it fails, and is recorded, later).
    """
    if max_bytes <= 0:
        if items:
            yield list(items)
        return
    run: list[Item] = []
    total = 0
    for item, path in zip(items, paths, strict=True):
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        if run and total + size > max_bytes:
            yield run
            run, total = [], 0
        run.append(item)
        total += size
    if run:
        yield run


def missing_identity(ds: Dataset) -> str | None:
    """Return why ``ds`` is not a usable DICOM instance (no SOP Class/Instance UID), or None."""
    missing = []
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        try:
            value = str(ds.get(keyword, "") or "").strip("\0 ")
        except Exception:  # noqa: BLE001 - an element that does not even decode
            value = ""
        if not value:
            missing.append(keyword)
    if not missing:
        return None
    return f"corrupt: the dataset has no {' and no '.join(missing)} (not a DICOM instance?)"

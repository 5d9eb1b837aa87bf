"""Atomic, durable writes of DICOM files into the storage directory."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

LOGGER = logging.getLogger(__name__)

INCOMING = "incoming"
OUTPUTS = "outputs"


def atomic_write(path: Path, chunks: list[bytes] | bytes, *, sync_folder: bool = True) -> None:
    """Write ``chunks`` to ``path`` so that it is either absent or complete, even after a crash.

    The bytes go to a temporary file in the same folder, which is flushed, ``fsync``-ed and
    renamed over ``path``; the folder is then ``fsync``-ed so the rename itself is durable.

    Parameters
    ----------
    path : Path
        The final file name; its folder is created when missing.
    chunks : bytes or list of bytes
        The content, written in order.
    sync_folder : bool
        ``False`` leaves the folder's ``fsync`` to the caller, who writes several files and
        calls :func:`sync_folder_of` once before relying on any of them (the file itself is
        always ``fsync``-ed).

    Raises
    ------
    OSError
        When anything fails; no partial file is left at ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(chunks, bytes | bytearray):
        chunks = [bytes(chunks)]
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    if sync_folder:
        sync_folder_of(path)


def sync_folder_of(path: Path) -> None:
    """``fsync`` the folder holding ``path``, making renames into it durable.

    Raises
    ------
    OSError
        When the folder cannot be opened or ``fsync``-ed.
    """
    if os.name == "nt":  # pragma: no cover - Windows cannot open a folder to fsync it
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_space_mb(folder: Path) -> float:
    """Return the free space, in MiB, of the file system holding ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free / (1024 * 1024)


def incoming_path(storage_dir: Path, sop_instance_uid: str) -> Path:
    """Return where a received instance is kept, named by its SOP Instance UID."""
    return storage_dir / INCOMING / f"{_safe(sop_instance_uid)}.dcm"


def output_path(storage_dir: Path, sop_instance_uid: str) -> Path:
    """Return where a derived instance is kept, named by its SOP Instance UID."""
    return storage_dir / OUTPUTS / f"{_safe(sop_instance_uid)}.dcm"


def incoming_files(storage_dir: Path) -> dict[str, Path]:
    """Return ``{SOP Instance UID: path}`` of the received files, removing interrupted writes."""
    folder = storage_dir / INCOMING
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in folder.iterdir():
        if path.name.startswith(".tmp-"):
            path.unlink(missing_ok=True)  # a write interrupted by a crash: never acknowledged
        elif path.suffix == ".dcm":
            found[path.stem] = path
    return found


def _safe(uid: str) -> str:
    # UIDs are digits and dots; anything else (a malformed peer) must not escape the folder.
    cleaned = "".join(c if c.isdigit() or c == "." else "_" for c in uid.strip("\0 "))
    return cleaned.strip(".") or "_"

"""Phantom archive simulator: tissue, B-mode, SWE and scanner renderings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.simulate.archive import ArchiveSummary, write_archive

__all__ = ["ArchiveSummary", "write_archive"]


def __getattr__(name: str) -> Any:
    # Lazy: ``sswe-node`` imports ``training.simulate.command`` for the help of every
    # sub-command (``serve`` included), and the archive writer pulls in h5py, pydicom, scipy
    # and the imaging core (about a second).
    if name in __all__:
        from training.simulate import archive

        return getattr(archive, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Phantom archive simulator: tissue, B-mode, SWE and scanner renderings."""

from training.simulate.archive import ArchiveSummary, write_archive

__all__ = ["ArchiveSummary", "write_archive"]

"""Per-scanner running latent statistics in the case store (table ``scanner_stats``)."""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sswe_node.node.schema import ScannerStats, utcnow
from sswe_node.node.store import CaseStore
from sswe_node.trust import FeatureStats

__all__ = ["StoredScannerStats"]


class StoredScannerStats:
    """A :class:`~sswe_node.alignment.ScannerStatsStore` on the case store.

    ``count`` is frames; ``mean`` and ``m2`` (JSON lists) are the per-feature mean and sum of
    squared deviations of the flattened latent maps. Updates are read-merge-write in one
    transaction per scanner.
    """

    def __init__(self, store: CaseStore) -> None:
        self.store = store

    def merge(self, model_name: str, scanner: str, stats: FeatureStats) -> FeatureStats:
        """Add ``stats`` to the scanner's running statistics and return the result."""
        for _ in range(3):  # a concurrent first insert of the same scanner: retry as update
            try:
                return self._merge(model_name, scanner[:130], stats)
            except IntegrityError:
                continue
        return stats

    def _merge(self, model_name: str, scanner: str, stats: FeatureStats) -> FeatureStats:
        with self.store.session() as session, session.begin():
            row = session.scalars(
                select(ScannerStats)
                .where(ScannerStats.model_name == model_name, ScannerStats.scanner == scanner)
                .with_for_update()
            ).first()
            merged = stats
            if row is not None and row.count:
                old = FeatureStats(
                    row.count,
                    np.asarray(json.loads(row.mean), np.float64),
                    np.asarray(json.loads(row.m2), np.float64),
                )
                if old.mean.shape == stats.mean.shape:
                    merged = old.merge(stats)
            if row is None:
                row = ScannerStats(model_name=model_name, scanner=scanner)
                session.add(row)
            row.count = int(merged.count)
            row.mean = json.dumps([float(v) for v in merged.mean])
            row.m2 = json.dumps([float(v) for v in merged.m2])
            row.updated_at = utcnow()
        return merged

    def all(self) -> dict[tuple[str, str], int]:
        """Return ``{(model_name, scanner): frames}`` of every row."""
        with self.store.session() as session:
            rows = session.execute(
                select(ScannerStats.model_name, ScannerStats.scanner, ScannerStats.count)
            ).all()
        return {(m, s): int(c) for m, s, c in rows}

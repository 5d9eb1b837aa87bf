"""Per-scanner running latent statistics in the case store (table scanner_stats, issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sswe_node.alignment import MemoryScannerStats
from sswe_node.node.scanner_stats import StoredScannerStats
from sswe_node.node.store import CaseStore
from sswe_node.trust import FeatureStats


def test_stored_statistics_merge_like_memory_and_persist(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cases.db'}"
    store = CaseStore(url)
    stored, memory = StoredScannerStats(store), MemoryScannerStats()
    rng = np.random.default_rng(0)
    batches = [rng.normal(i, 1 + i, (n, 12)) for i, n in enumerate((5, 9, 3))]
    for batch in batches:
        a = stored.merge("prostate-sim", "ACME Scan 1", FeatureStats.from_frames(batch))
        b = memory.merge("prostate-sim", "ACME Scan 1", FeatureStats.from_frames(batch))
    stored.merge("thyroid-sim", "ACME Scan 1", FeatureStats.from_frames(batches[0]))
    assert a.count == b.count == 17
    np.testing.assert_allclose(a.mean, np.concatenate(batches).mean(axis=0))
    np.testing.assert_allclose(a.variance, np.concatenate(batches).var(axis=0))
    np.testing.assert_allclose(a.m2, b.m2)
    store.close()
    again = CaseStore(url)  # a restart keeps them
    try:
        rows = StoredScannerStats(again).all()
        assert rows == {("prostate-sim", "ACME Scan 1"): 17, ("thyroid-sim", "ACME Scan 1"): 5}
        more = StoredScannerStats(again).merge(
            "prostate-sim", "ACME Scan 1", FeatureStats.from_frames(batches[0])
        )
        assert more.count == 22
    finally:
        again.close()

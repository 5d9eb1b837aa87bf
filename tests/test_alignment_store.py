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


def test_statistics_are_kept_to_the_bit_and_rows_of_json_lists_are_read(tmp_path: Path) -> None:
    import json

    from sqlalchemy import select, update

    from sswe_node.node.scanner_stats import decode_features, encode_features
    from sswe_node.node.schema import ScannerStats

    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 1e6, 500), [0.0, -0.0, 5e-324, np.inf, np.nan]])
    back = decode_features(encode_features(values))
    assert back.dtype == np.float64 and back.flags.writeable
    assert np.array_equal(back, values, equal_nan=True)
    assert np.signbit(back[-4])  # -0.0 kept
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    try:
        stored = StoredScannerStats(store)
        first = rng.normal(3, 2, (7, 12))
        stored.merge("prostate-sim", "ACME Scan 1", FeatureStats.from_frames(first))
        old = FeatureStats.from_frames(first)
        with store.session() as session, session.begin():  # a row as 0.2 wrote it
            session.execute(
                update(ScannerStats).values(
                    mean=json.dumps([float(v) for v in old.mean]),
                    m2=json.dumps([float(v) for v in old.m2]),
                )
            )
        second = rng.normal(-1, 1, (4, 12))
        merged = stored.merge("prostate-sim", "ACME Scan 1", FeatureStats.from_frames(second))
        both = np.concatenate([first, second])
        assert merged.count == 11
        np.testing.assert_allclose(merged.mean, both.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(merged.variance, both.var(axis=0), rtol=1e-12)
        with store.session() as session:
            text = session.scalars(select(ScannerStats.mean)).one()
        assert text.startswith("f8le:")  # rewritten in the compact form
    finally:
        store.close()

"""The case-store schema under Alembic: a 0.1.0 database upgrades, fresh ones match the models."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from sswe_node.node.migrate import current_revision, heads
from sswe_node.node.records import CaseOutcome, ReceivedInstance
from sswe_node.node.schema import Base
from sswe_node.node.store import CaseStore

FIXTURE = Path(__file__).parent / "data" / "casestore-v0.1.0.db"


def _differences(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    return diffs


def test_one_head() -> None:
    assert len(heads()) == 1


def test_database_made_by_0_1_0_upgrades_and_keeps_its_cases(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE, db)
    with sqlite3.connect(db) as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "alembic_version" not in tables  # really made without Alembic

    store = CaseStore(f"sqlite:///{db}")
    with store.engine.connect() as connection:
        assert current_revision(connection) == heads()[0]
    cases = {c["sop_instance_uid"]: c for c in store.list_cases()}
    assert cases["1.2.3.1"]["status"] == "done" and cases["1.2.3.1"]["outputs"] == 1
    assert cases["1.2.3.1"]["sends"]["queued"] == 1
    assert cases["1.2.3.2"]["reason"] == "wrong-modality"
    assert cases["1.2.3.1"]["warnings"] == [] and cases["1.2.3.1"]["called_ae"] == ""
    assert [job.destination for job in store.due_sends()] == ["pacs"]
    # The new columns work on the upgraded rows.
    store.claim(5)
    store.finish(
        cases["1.2.3.3"]["id"],
        CaseOutcome("done", warnings=("out-of-distribution",), scale_max=180.0),
    )
    row = {c["sop_instance_uid"]: c for c in store.list_cases()}["1.2.3.3"]
    assert row["warnings"] == ["out-of-distribution"] and row["scale"]["max"] == 180.0
    store.close()
    assert _differences(f"sqlite:///{db}") == []


def test_fresh_database_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    store = CaseStore(url)
    store.record_received(ReceivedInstance("1.2.3", "1.2.840.10008.5.1.4.1.1.6.1", "/x.dcm"))
    store.close()
    assert _differences(url) == []
    CaseStore(url).close()  # opening an up-to-date store again migrates nothing

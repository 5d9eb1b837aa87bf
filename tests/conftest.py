"""Shared fixtures: real peers (Orthanc, dcmtk) and the simulated archive."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import Orthanc


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A real Orthanc on free loopback ports, stopped after the test."""
    server = Orthanc(tmp_path / "orthanc")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def require_dcmtk() -> None:
    """Fail clearly when dcmtk is missing (the README's set-up installs it)."""
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is not installed: run ./scripts/setup.sh")

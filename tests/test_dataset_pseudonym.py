"""Pseudonymisation: keyed hashes, key sources and generation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sswe_node.errors import ConfigError
from training.pseudonym import KEY_ENV, PseudonymKey, load_key


def test_keyed_hash_is_stable_and_depends_on_key() -> None:
    a = PseudonymKey(b"secret-a", "test")
    b = PseudonymKey(b"secret-b", "test")
    assert a.patient_key("PAT-1") == a.patient_key(" PAT-1 ")
    assert len(a.patient_key("PAT-1")) == 64
    assert a.patient_key("PAT-1") != a.patient_key("PAT-2")
    assert a.patient_key("PAT-1") != b.patient_key("PAT-1")
    assert "PAT-1" not in a.patient_key("PAT-1")
    # Empty IDs fall back to the study, so anonymous studies are not one patient.
    assert a.patient_key("", "1.2.3") != a.patient_key("", "1.2.4")
    assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 16


def test_key_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "train.h5"
    key_file = tmp_path / "k.txt"
    key_file.write_text("from-file\n")
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert load_key(key_file, out).secret == b"from-file"
    assert load_key(None, out).secret == b"from-env"
    monkeypatch.delenv(KEY_ENV)
    generated = load_key(None, out)
    path = Path(str(out) + ".key")
    assert generated.origin == f"generated:{path}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_key(None, out)  # reused on the next build
    assert again.secret == generated.secret and again.origin.startswith("file:")


def test_empty_or_missing_key_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        load_key(tmp_path / "empty", tmp_path / "d.h5")
    with pytest.raises(ConfigError, match="cannot read"):
        load_key(tmp_path / "missing", tmp_path / "d.h5")

"""docs/conformance.md against the code: the presentation contexts the SCP really supports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification

from sswe_node.config import DEFAULT_CONFIG_PATH, load_settings
from sswe_node.node.scp import build_ae
from sswe_node.node.status import Status
from sswe_node.outputs.parametric_map import PARAMETRIC_MAP_STORAGE
from tests.peers import free_port

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
VERIFICATION = "1.2.840.10008.1.1"
_UID = re.compile(r"`(1\.2\.840\.10008(?:\.[0-9]+)+)`")


def table(name: str) -> list[str]:
    """UIDs of the first column holding one, in the table after ``<!-- conformance:NAME -->``."""
    marker = f"<!-- conformance:{name} -->"
    assert marker in DOC, f"no table {name} in docs/conformance.md"
    rows = []
    for line in DOC.split(marker, 1)[1].lstrip().splitlines():
        if not line.startswith("|"):
            break
        found = _UID.search(line)
        if found:
            rows.append(found.group(1))
    assert rows, name
    return rows


@pytest.fixture(scope="module")
def ae() -> AE:
    return build_ae(load_settings(DEFAULT_CONFIG_PATH, environ={}))


def _contexts(ae: AE) -> dict[str, list[str]]:
    return {
        str(c.abstract_syntax): [str(t) for t in c.transfer_syntax] for c in ae.supported_contexts
    }


def test_the_tables_have_no_duplicates() -> None:
    for name in ("scp-sop-classes", "other-storage-sop-classes", "storage-transfer-syntaxes"):
        rows = table(name)
        assert len(rows) == len(set(rows)), name
    assert set(table("scp-sop-classes")).isdisjoint(table("other-storage-sop-classes"))


def test_sop_classes_accepted_are_those_stated(ae: AE) -> None:
    stated = set(table("scp-sop-classes")) | set(table("other-storage-sop-classes"))
    supported = set(_contexts(ae))
    assert sorted(supported - stated) == [], "accepted but not in docs/conformance.md"
    assert sorted(stated - supported) == [], "in docs/conformance.md but not accepted"


def test_storage_transfer_syntaxes_are_those_stated(ae: AE) -> None:
    stated = table("storage-transfer-syntaxes")
    for sop_class, syntaxes in _contexts(ae).items():
        if sop_class != VERIFICATION:
            assert syntaxes == stated, sop_class  # same syntaxes, same order of preference


def test_verification_transfer_syntaxes_are_those_stated(ae: AE) -> None:
    assert _contexts(ae)[VERIFICATION] == table("verification-transfer-syntaxes")


def test_classes_sent_are_those_the_node_creates() -> None:
    sent = table("scu-sop-classes")
    assert sent == [PARAMETRIC_MAP_STORAGE, "1.2.840.10008.5.1.4.1.1.7", VERIFICATION]


def test_status_codes_are_those_the_node_returns() -> None:
    block = DOC.split("<!-- conformance:status-codes -->", 1)[1].split("\n\n", 1)[0]
    stated = {int(code, 16) for code in re.findall(r"`0x([0-9A-F]{4})`", block)}
    assert stated == {int(s) for s in Status}


def test_a_real_association_accepts_the_stated_contexts(ae: AE) -> None:
    """Start the SCP's AE on a port and propose a few stated contexts, one syntax each."""
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        scu = AE(ae_title="CONFORMANCE")
        storage_syntaxes = table("storage-transfer-syntaxes")
        proposed = [build_context(Verification)]
        for syntax in storage_syntaxes[:5]:
            proposed.append(build_context("1.2.840.10008.5.1.4.1.1.6.1", syntax))
        proposed.append(build_context(table("other-storage-sop-classes")[0], storage_syntaxes[0]))
        proposed.append(build_context("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.1.2.4.100"))
        assoc = scu.associate("127.0.0.1", port, ae_title="SSWE_NODE", contexts=proposed)
        assert assoc.is_established
        accepted = {
            (str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts
        }
        assoc.release()
        expected = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in proposed[:-1]}
        assert accepted == expected  # MPEG-2 (not stated) is refused
    finally:
        server.shutdown()

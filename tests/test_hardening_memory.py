"""Memory bounds on what arrives (issue 11, item 4); the 1 GiB figures are in
``benchmarks/bench_memory.py``, these use small sizes to stay fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid
from pynetdicom import AE, _config

from sswe_node.node.inflate import check_inflated_size
from sswe_node.node.intake import split_by_bytes
from sswe_node.node.storage import TooLargeError
from sswe_node.node.store import CaseStore
from tests.bombs import write_deflate_bomb
from tests.node_support import StartNode

MIB = 1024 * 1024


def _send_file_as_is(port: int, path: Path) -> int:
    """C-STORE a file's bytes as they are (pynetdicom's chunked send): a bomb stays a bomb."""
    ae = AE(ae_title="BOMBER")
    ae.add_requested_context(UltrasoundImageStorage, DeflatedExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="SSWE_NODE")
    assert assoc.is_established
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        assoc.release()


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_deflate_bomb_is_refused_without_inflating_it(
    start_node: StartNode, tmp_path: Path
) -> None:
    node = start_node(node={"max_instance_mb": 16})
    bomb = tmp_path / "bomb.dcm"
    assert write_deflate_bomb(bomb, generate_uid(), 256 * MIB) < 1 * MIB
    before = _peak_rss_mb()
    assert _send_file_as_is(node.port, bomb) == 0xA700
    assert _peak_rss_mb() - before < 64  # never inflated whole (256 MiB)
    store = CaseStore(node.settings.node.database_url)
    assert store.list_cases() == []
    store.close()
    assert not list(Path(node.settings.node.storage_dir, "incoming").iterdir())
    # Under the limit the same kind of file is kept.
    small = tmp_path / "small.dcm"
    write_deflate_bomb(small, generate_uid(), 4 * MIB)
    assert _send_file_as_is(node.port, small) == 0


def test_encoded_stream_over_the_limit_is_cut_while_it_arrives(
    start_node: StartNode, make_us_source, tmp_path: Path
) -> None:
    node = start_node(node={"max_instance_mb": 1})
    big = make_us_source(rows=1024, cols=2048, regions=False)  # 2 MiB of pixels
    small = make_us_source(rows=256, cols=256, regions=False, seed=1)
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(UltrasoundImageStorage)
    ae.maximum_pdu_size = 16384  # the stream comes in many P-DATA: cut after about 1 MiB
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SSWE_NODE")
    try:
        status = assoc.send_c_store(big)
        assert not status  # no response: the node aborted the association
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established
    finally:
        if assoc.is_established:
            assoc.release()
    assert not list(Path(node.settings.node.storage_dir, "incoming").glob("*.dcm"))
    # The next association is served as usual.
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SSWE_NODE")
    try:
        assert int(assoc.send_c_store(small).Status) == 0
    finally:
        assoc.release()


def test_inflated_size_check_stops_early(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.dcm"
    write_deflate_bomb(bomb, generate_uid(), 64 * MIB)
    with pytest.raises(TooLargeError):
        check_inflated_size(bomb, 8 * MIB)
    assert check_inflated_size(bomb, 0) > 64 * MIB


def test_batches_are_bounded_by_bytes(tmp_path: Path) -> None:
    sizes = [5, 5, 5, 20, 1, 1]
    paths = []
    for i, size in enumerate(sizes):
        paths.append(tmp_path / f"{i}.dcm")
        paths[-1].write_bytes(bytes(size))
    runs = list(split_by_bytes(list(range(6)), [str(p) for p in paths], 10))
    assert runs == [[0, 1], [2], [3], [4, 5]]
    assert list(split_by_bytes([1, 2], [str(paths[0])] * 2, 0)) == [[1, 2]]


def test_chunked_receive_is_on_only_while_a_node_listens(start_node: StartNode) -> None:
    # Process-wide in pynetdicom: other SCPs of the process (dataset build's C-MOVE
    # destination) get it back off once the node stops.
    assert _config.STORE_RECV_CHUNKED_DATASET is False
    node = start_node()
    assert _config.STORE_RECV_CHUNKED_DATASET is True
    node.stop(grace_seconds=5)
    assert _config.STORE_RECV_CHUNKED_DATASET is False

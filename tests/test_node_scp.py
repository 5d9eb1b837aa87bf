"""The storage SCP against dcmtk's storescu/echoscu: persist before Success, access, TLS."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from sswe_node.config import load_settings
from sswe_node.node.app import Node
from sswe_node.node.scp import PYNETDICOM_THREAD_LIMIT, build_ae
from sswe_node.node.store import CaseStore
from tests.node_support import (
    StartNode,
    echo_while_holding,
    make_certificate,
    node_sections,
    storescu_keep,
    write_config,
)
from tests.peers import dcmtk_env, echoscu


@pytest.fixture
def start_node(start_node: StartNode, require_dcmtk: None) -> StartNode:
    """The shared paused-node starter (tests/conftest.py), with dcmtk required."""
    return start_node


def _cases(node: Node) -> list[dict]:
    store = CaseStore(node.settings.node.database_url)
    try:
        return store.list_cases()
    finally:
        store.close()


def test_stores_ultrasound_files_unchanged(start_node: StartNode, tmp_path: Path) -> None:
    node = start_node()
    assert echoscu(node.port, called_aet="SSWE_NODE")
    # JPEG 2000, explicit VR (ALOKA), RLE, JPEG lossless, JPEG baseline, deflate.
    names = ["US1_J2KI.dcm", "gdcm-US-ALOKA-16.dcm", "SC_rgb_rle.dcm", "JPEG-LL.dcm",
             "SC_rgb_jpeg_lossy_gdcm.dcm"]  # fmt: skip
    files = [Path(get_testdata_file(n)) for n in names]
    deflated = dcmread(get_testdata_file("US1_UNCR.dcm"))
    deflated.SOPInstanceUID = generate_uid()
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    files.append(tmp_path / "deflated.dcm")
    storescu_keep(files, node.port)
    cases = {c["sop_instance_uid"]: c for c in _cases(node)}
    assert len(cases) == len(files)
    for f in files:
        source = dcmread(f)
        case = cases[source.SOPInstanceUID]
        assert case["status"] == "received"
        assert case["calling_ae"] == "STORESCU"
        assert case["transfer_syntax"] == source.file_meta.TransferSyntaxUID
        stored_path = next(
            Path(node.settings.node.storage_dir).rglob(f"{case['sop_instance_uid']}.dcm")
        )
        stored = dcmread(stored_path)
        assert stored.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert stored.PixelData == source.PixelData
        assert stored.StudyInstanceUID == case["study_instance_uid"]


def test_keeps_any_character_set(start_node: StartNode, make_us_source, tmp_path: Path) -> None:
    node = start_node()
    ds = make_us_source(rows=64, cols=64)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen=山田^太郎"
    latin = make_us_source(rows=64, cols=64, seed=1)
    latin.SpecificCharacterSet = "ISO_IR 100"
    latin.PatientName = "Größe^Zoë"
    paths = [tmp_path / "utf8.dcm", tmp_path / "latin1.dcm"]
    ds.save_as(paths[0], enforce_file_format=True)
    latin.save_as(paths[1], enforce_file_format=True)
    storescu_keep(paths, node.port)
    for source_path, source in zip(paths, (ds, latin), strict=True):
        stored_path = Path(
            node.settings.node.storage_dir, "incoming", f"{source.SOPInstanceUID}.dcm"
        )
        raw = dcmread(source_path)["PatientName"].value
        stored = dcmread(stored_path)
        assert stored.SpecificCharacterSet == source.SpecificCharacterSet
        assert str(stored.PatientName) == str(source.PatientName) == str(raw)


def test_rejects_unknown_calling_ae(start_node: StartNode) -> None:
    node = start_node(node={"allowed_calling_ae_titles": ["SCANNER"]})
    path = Path(get_testdata_file("US1_UNCR.dcm"))
    refused = storescu_keep([path], node.port, calling_aet="INTRUDER", check=False)
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stderr
    assert "Calling AE Title Not Recognized" in refused.stderr
    assert _cases(node) == []
    storescu_keep([path], node.port, calling_aet="SCANNER")
    assert len(_cases(node)) == 1


def test_rejects_unknown_peer_address(start_node: StartNode) -> None:
    node = start_node(node={"allowed_peer_addresses": ["192.0.2.1"]})
    path = Path(get_testdata_file("US1_UNCR.dcm"))
    refused = storescu_keep([path], node.port, check=False)
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stderr
    assert _cases(node) == []


def test_full_disk_answers_out_of_resources(start_node: StartNode) -> None:
    node = start_node(node={"min_free_space_mb": 1_000_000_000})
    path = Path(get_testdata_file("US1_UNCR.dcm"))
    result = storescu_keep([path], node.port, extra=["-v"], check=False)
    assert result.returncode != 0
    assert "Refused: OutOfResources" in result.stderr + result.stdout
    assert _cases(node) == []
    assert not list(Path(node.settings.node.storage_dir).rglob("*.dcm"))


def test_tls_with_storescu(start_node: StartNode, tmp_path: Path) -> None:
    key, cert = make_certificate(tmp_path)
    node = start_node(tls={"enabled": True, "certificate": str(cert), "private_key": str(key)})
    path = Path(get_testdata_file("US1_UNCR.dcm"))
    tls_options = ["+tls", str(key), str(cert), "+cf", str(cert)]
    storescu_keep([path], node.port, extra=tls_options)
    assert len(_cases(node)) == 1
    plain = subprocess.run(
        ["echoscu", "-to", "5", "-aec", "SSWE_NODE", "127.0.0.1", str(node.port)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert plain.returncode != 0


def test_port_is_free_after_stop(start_node: StartNode) -> None:
    node = start_node()
    port = node.port
    node.stop(grace_seconds=5)
    assert not echoscu(port, called_aet="SSWE_NODE")


def test_keeps_receiving_without_a_model(start_node: StartNode, tmp_path: Path) -> None:
    node = start_node(
        processing={"paused": False}, model={"name": "no-such-model", "models_dir": str(tmp_path)}
    )
    node.workers[0].join(timeout=30)  # the worker gives up on the missing model
    health = node.health()
    assert health["status"] == "degraded"
    assert "no-such-model" in health["errors"][0]
    storescu_keep([Path(get_testdata_file("US1_UNCR.dcm"))], node.port)
    assert [c["status"] for c in _cases(node)] == ["received"]
    assert "sswe_received_total 1" in node.render_metrics()


def test_records_synced_files_missing_from_the_store(start_node: StartNode, tmp_path: Path) -> None:
    # As after a power cut: the file was synced and acknowledged, its case row was lost.
    source = Path(get_testdata_file("US1_UNCR.dcm"))
    uid = str(dcmread(source, stop_before_pixels=True).SOPInstanceUID)
    incoming = tmp_path / "storage" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / f"{uid}.dcm").write_bytes(source.read_bytes())
    (incoming / ".tmp-interrupted.part").write_bytes(b"half a file")
    node = start_node()
    cases = _cases(node)
    assert [(c["sop_instance_uid"], c["status"]) for c in cases] == [(uid, "received")]
    assert cases[0]["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.6.1"
    assert sorted(p.name for p in incoming.iterdir()) == [f"{uid}.dcm"]


def test_ae_built_from_settings(tmp_path: Path) -> None:
    sections = node_sections(
        tmp_path,
        node={"max_associations": 3, "max_pdu_size": 32768, "acse_timeout": 7.0,
              "dimse_timeout": 8.0, "network_timeout": 9.0,
              "allowed_calling_ae_titles": ["SCANNER", "PACS"]},
    )  # fmt: skip
    ae = build_ae(load_settings(write_config(tmp_path / "node.toml", sections)))
    # The node counts admitted associations itself (sswe_node.node.admission); pynetdicom's
    # thread count must not reject first.
    assert ae.maximum_associations == PYNETDICOM_THREAD_LIMIT
    assert ae.maximum_pdu_size == 32768
    assert (ae.acse_timeout, ae.dimse_timeout, ae.network_timeout) == (7.0, 8.0, 9.0)
    supported = {c.abstract_syntax: c.transfer_syntax for c in ae.supported_contexts}
    for uid in (
        UltrasoundImageStorage,
        UltrasoundMultiFrameImageStorage,
        SecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    ):
        assert JPEGBaseline8Bit in supported[uid] and JPEG2000 in supported[uid], uid
    assert CTImageStorage in supported  # kept and reported as skipped, not refused unseen


def test_pdu_size_reaches_the_peer(start_node: StartNode) -> None:
    node = start_node(node={"max_pdu_size": 16384})
    scu = AE(ae_title="PROBE")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", node.port, ae_title="SSWE_NODE")
    try:
        assert assoc.is_established
        assert assoc.acceptor.maximum_length == 16384
    finally:
        assoc.release()


def test_max_associations_rejects_one_more(start_node: StartNode) -> None:
    node = start_node(node={"max_associations": 1})
    _scu, second = echo_while_holding(node.port)
    assert second.returncode != 0
    assert "Association Rejected" in second.stderr
    assert "Local Limit Exceeded" in second.stderr
    # Once the first association is gone, the next one is served again.
    deadline = time.monotonic() + 10
    while not echoscu(node.port, called_aet="SSWE_NODE"):
        assert time.monotonic() < deadline, "still rejected after the first association ended"
        time.sleep(0.1)


def test_receives_multiframe_ultrasound_and_secondary_capture_classes(
    start_node: StartNode, make_us_source, tmp_path: Path
) -> None:
    node = start_node()
    cine = make_us_source(rows=64, cols=80, frames=4)
    rgb = make_us_source(rows=64, cols=80, frames=3, seed=1)
    rgb.SamplesPerPixel, rgb.PhotometricInterpretation, rgb.PlanarConfiguration = 3, "RGB", 0
    rgb.PixelData = np.repeat(np.frombuffer(rgb.PixelData, np.uint8), 3).tobytes()
    grey = make_us_source(rows=64, cols=80, frames=2, seed=2)
    single = make_us_source(rows=64, cols=80, seed=3)
    classes = {
        "cine": (cine, UltrasoundMultiFrameImageStorage),
        "rgb": (rgb, MultiFrameTrueColorSecondaryCaptureImageStorage),
        "grey": (grey, MultiFrameGrayscaleByteSecondaryCaptureImageStorage),
        "single": (single, SecondaryCaptureImageStorage),
    }
    paths = []
    for name, (ds, sop_class) in classes.items():
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        paths.append(tmp_path / f"{name}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    storescu_keep(paths, node.port)
    cases = {c["sop_instance_uid"]: c for c in _cases(node)}
    for ds, sop_class in classes.values():
        assert cases[ds.SOPInstanceUID]["sop_class_uid"] == sop_class
        stored = dcmread(
            Path(node.settings.node.storage_dir, "incoming", f"{ds.SOPInstanceUID}.dcm")
        )
        assert stored.PixelData == ds.PixelData
    assert dcmread(paths[1]).pixel_array.shape == (3, 64, 80, 3)

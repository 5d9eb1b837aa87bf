"""`sswe-node serve` end to end: storescu -> node -> Orthanc, crash recovery, bad inputs."""

from __future__ import annotations

import io
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UltrasoundMultiFrameImageStorage, generate_uid

from sswe_node.cli import main
from sswe_node.config import load_settings
from sswe_node.node.store import CaseStore
from tests.node_support import (
    ROOT,
    ServeProcess,
    node_sections,
    sswe_node,
    storescu_keep,
    write_config,
)
from tests.peers import Orthanc, echoscu, free_port

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
SHIPPED_MODEL = ROOT / "models" / "prostate-sim"


@pytest.fixture(scope="session")
def packaged_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The shipped model when present, else a small untrained U-Net packaged the same way."""
    if (SHIPPED_MODEL / "model.toml").is_file():
        return SHIPPED_MODEL.parent, SHIPPED_MODEL.name
    from training.package import write_package
    from training.unet import build_unet

    models = tmp_path_factory.mktemp("models")
    network = build_unet((96, 64), depth=2, filters=4, seed=0)
    write_package(
        network, models / "tiny-test", name="tiny-test", version="0.0.1", organ="prostate",
        quantity="youngs-modulus", trained_on="untrained (node tests)", status="provisional",
    )  # fmt: skip
    return models, "tiny-test"


@pytest.fixture(scope="session")
def sim_archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One simulated plane: a dual capture, a full-screen B-mode, another scanner's B-mode."""
    from training.simulate import write_archive

    out = tmp_path_factory.mktemp("archive")
    write_archive(out, patients=1, images_per_patient=1, seed=3)
    index = json.loads((out / "archive.json").read_text())
    return {r["kind"]: out / r["path"] for r in index["instances"]}


def _bad_inputs(tmp_path: Path, make_us_source: Any) -> dict[str, Path]:
    """A corrupt file (truncated pixel data), a CT image and a Doppler frame."""
    corrupt = make_us_source(rows=64, cols=64, seed=5)
    corrupt.PixelData = corrupt.PixelData[:1000]
    doppler = make_us_source(rows=120, cols=160, seed=6)
    doppler.SequenceOfUltrasoundRegions[0].RegionDataType = 3  # PW spectral Doppler
    paths = {"corrupt": tmp_path / "corrupt.dcm", "doppler": tmp_path / "doppler.dcm"}
    corrupt.save_as(paths["corrupt"], enforce_file_format=True)
    doppler.save_as(paths["doppler"], enforce_file_format=True)
    paths["ct"] = Path(get_testdata_file("CT_small.dcm"))
    return paths


def _config(
    workdir: Path,
    model: tuple[Path, str],
    destination_port: int | None,
    callers: list[dict[str, Any]] | None = None,
    **extra: dict[str, Any],
) -> tuple[Path, int]:
    sections = node_sections(
        workdir,
        model={"name": model[1], "models_dir": str(model[0])},
        processing={"batch_size": 8, "batch_wait_seconds": 0.3},
        **extra,
    )
    destinations = []
    if destination_port:
        destinations = [
            {
                "name": "orthanc",
                "ae_title": "ORTHANC",
                "host": "127.0.0.1",
                "port": destination_port,
            }
        ]
    path = write_config(workdir / "node.toml", sections, destinations, callers or [])
    return path, int(sections["node"]["port"])


def _store(config: Path) -> CaseStore:
    return CaseStore(load_settings(config).node.database_url)


def _wait_settled(config: Path, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Wait until ``count`` cases are finished and no send is queued; return the cases."""
    store = _store(config)
    deadline = time.monotonic() + timeout
    try:
        while True:
            cases = store.list_cases(limit=None)
            finished = [c for c in cases if c["status"] not in ("received", "processing")]
            queued = store.counts()["sends"]["queued"]
            if len(finished) >= count and queued == 0:
                # Read again: a send that ended between the two reads above shows as queued in
                # ``cases``; nothing is queued after ``counts()`` said none was.
                return store.list_cases(limit=None)
            assert time.monotonic() < deadline, f"not settled: {cases} queued={queued}"
            time.sleep(0.2)
    finally:
        store.close()


def _pm_values(ds: Dataset) -> np.ndarray:
    """Real-world values of a Parametric Map read back with highdicom."""
    import highdicom as hd

    pm = hd.pm.ParametricMap.from_dataset(ds)
    pixels = np.asarray(pm.pixel_array, dtype=np.float64)
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return pixels
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    return pixels * float(mapping.RealWorldValueSlope) + float(mapping.RealWorldValueIntercept)


def _expected_values(source: Path, config: Path) -> np.ndarray:
    """The model's prediction for the source, mapped back onto its region of interest."""
    from sswe_node.imaging.grid import from_grid
    from sswe_node.node.worker import load_node_model
    from sswe_node.pipeline import pre_process

    settings = load_settings(config)
    model = load_node_model(settings)
    readings, inputs = pre_process(dcmread(source), model, settings)
    # The node's map is the MC dropout mean (fixed masks: the same for this frame alone).
    mc = hasattr(model, "infer")
    prediction = model.infer(inputs).values[0] if mc else model.predict(inputs)[0]
    roi = readings[0].roi
    return np.asarray(from_grid(prediction, (roi.bottom - roi.top, roi.right - roi.left)))


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]


@pytest.mark.slow
def test_serve_end_to_end(
    tmp_path: Path,
    orthanc: Orthanc,
    packaged_model: tuple[Path, str],
    sim_archive: dict[str, Path],
    make_us_source: Any,
    require_dcmtk: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    http_port = free_port()
    config, port = _config(
        tmp_path, packaged_model, orthanc.dicom_port, http={"enabled": True, "port": http_port}
    )
    serve = ServeProcess(config, port, tmp_path / "serve.log")
    try:
        good = [sim_archive["dual"], sim_archive["bmode"], sim_archive["other-scanner"]]
        real = [
            Path(get_testdata_file("US1_UNCR.dcm")),  # GE power Doppler: skipped
            Path(get_testdata_file("gdcm-US-ALOKA-16.dcm")),  # ALOKA dual B-mode view: done
        ]
        bad = _bad_inputs(tmp_path, make_us_source)
        storescu_keep([*good, *real, *bad.values()], port)
        cases = _wait_settled(config, 8)
        by_uid = {c["sop_instance_uid"]: c for c in cases}
        uid = {name: str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for name, p in
               {**{"dual": good[0], "bmode": good[1], "other": good[2], "us1": real[0],
                    "aloka": real[1]},
                **bad}.items()}  # fmt: skip

        # Bad inputs leave clear reasons, and the node keeps serving.
        assert by_uid[uid["ct"]]["status"] == "skipped"
        assert by_uid[uid["ct"]]["reason"] == "wrong-modality"
        assert by_uid[uid["doppler"]]["status"] == "skipped"
        assert by_uid[uid["doppler"]]["reason"] == "unsupported-layout"
        assert by_uid[uid["corrupt"]]["status"] == "failed"
        assert by_uid[uid["corrupt"]]["reason"] in ("pixel-decode", "corrupt")
        assert echoscu(port, called_aet="SSWE_NODE")
        assert main(["cases", "--config", str(config), "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        reasons = {c["sop_instance_uid"]: c["reason"] for c in listed}
        assert reasons[uid["ct"]] == "wrong-modality"
        table = sswe_node("cases", "--config", str(config), "--status", "skipped").stdout
        assert "unsupported-layout" in table and "wrong-modality" in table
        assert "Test^Prostate" not in table

        # Every output of a done case arrived at Orthanc once, and is valid DICOM.
        for name in ("dual", "bmode", "other"):
            assert by_uid[uid[name]]["status"] == "done", by_uid[uid[name]]
        assert by_uid[uid["aloka"]]["status"] == "done", by_uid[uid["aloka"]]
        assert by_uid[uid["aloka"]]["outputs"] == 2
        assert by_uid[uid["us1"]]["status"] == "skipped"
        assert by_uid[uid["us1"]]["reason"] == "unsupported-layout"
        expected = sum(c["outputs"] for c in cases)
        assert expected >= 6
        stored = orthanc.wait_for_instances(expected, timeout=30)
        assert len(stored) == expected
        assert all(c["sends"]["sent"] == c["outputs"] for c in cases)
        sources = {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in good}
        pm_of_dual = None
        for instance in stored:
            path = tmp_path / f"{instance['ID']}.dcm"
            path.write_bytes(orthanc.instance_file(instance["ID"]))
            assert _dciodvfy_errors(path) == [], path
            ds = dcmread(path)
            assert "NOT FOR DIAGNOSIS" in str(ds.SeriesDescription).upper()
            if ds.SOPClassUID == PARAMETRIC_MAP and ds.StudyInstanceUID in sources:
                ref = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
                if ref.ReferencedSOPInstanceUID == uid["dual"]:
                    pm_of_dual = ds
        assert pm_of_dual is not None

        # The Parametric Map holds the model's prediction.
        values = _pm_values(pm_of_dual).reshape(-1, *_pm_values(pm_of_dual).shape[-2:])[0]
        want = _expected_values(sim_archive["dual"], config)
        assert values.shape == want.shape
        np.testing.assert_allclose(values, want, atol=0.01 * float(np.ptp(want)) + 1e-3)

        # Health and metrics.
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=10) as r:
            health = json.loads(r.read())
        assert health["status"] == "ok" and health["model_loaded"]
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert "sswe_received_total 8" in metrics
        assert f'sswe_sent_total{{destination="orthanc"}} {expected}' in metrics
        assert 'sswe_stage_seconds_count{stage="predict"}' in metrics
    finally:
        code = serve.terminate()
    assert code == 0
    assert "event=stopped" in serve.log()
    assert "Test^Prostate" not in serve.log()


@pytest.mark.slow
def test_sigkill_restart_and_late_destination(
    tmp_path: Path,
    packaged_model: tuple[Path, str],
    sim_archive: dict[str, Path],
    require_dcmtk: None,
) -> None:
    orthanc_port = free_port()
    config, port = _config(tmp_path, packaged_model, orthanc_port)
    files = [sim_archive["dual"], sim_archive["bmode"]]
    first = ServeProcess(config, port, tmp_path / "serve1.log")
    storescu_keep(files[:1], port)
    first.wait_log("event=case-done case=1")  # its outputs now wait in the send queue
    storescu_keep(files[1:], port)
    first.kill()  # a crash with sends queued (destination down) and a case pending
    store = _store(config)
    assert store.counts()["cases"]["received"] + store.counts()["cases"]["processing"] >= 1
    assert store.counts()["sends"]["queued"] == 2
    assert store.counts()["sends"]["sent"] == 0
    store.close()

    second = ServeProcess(config, port, tmp_path / "serve2.log")
    try:
        second.wait_log("event=start resumed=")
        with Orthanc(tmp_path / "orthanc", dicom_port=orthanc_port) as orthanc:
            cases = _wait_settled(config, 2)
            assert all(c["status"] == "done" for c in cases), cases
            expected = sum(c["outputs"] for c in cases)
            stored = orthanc.wait_for_instances(expected, timeout=30)
            assert len(stored) == expected
            store = _store(config)
            sends = store.list_sends()
            store.close()
            assert len(sends) == expected
            assert {s["output_sop_instance_uid"] for s in sends} == {
                i["MainDicomTags"]["SOPInstanceUID"] for i in stored
            }
            assert all(s["status"] == "sent" for s in sends)
    finally:
        assert second.terminate() == 0


@pytest.fixture
def in_process_node(tmp_path: Path, packaged_model: tuple[Path, str], require_dcmtk: None):
    """Start a real node in this process (SCP, worker, sender); stopped after the test."""
    from sswe_node.node.app import Node

    nodes: list[Node] = []

    def _start(destination_port: int | None = None, **extra: Any) -> tuple[Node, Path]:
        config, _ = _config(tmp_path, packaged_model, destination_port, **extra)
        node = Node(load_settings(config))
        node.start()
        nodes.append(node)
        return node, config

    yield _start
    for node in nodes:
        node.stop(grace_seconds=5)


def _derived(orthanc: Orthanc, source_uid: str) -> list[Dataset]:
    """The instances in Orthanc that were derived from ``source_uid``, read back."""
    found = []
    for instance in orthanc.instances():
        ds = dcmread(io.BytesIO(orthanc.instance_file(instance["ID"])))
        if ds.SOPInstanceUID != source_uid and source_uid in str(ds):
            found.append(ds)
    return found


def _referenced_frames(ds: Dataset) -> set[int]:
    """Every Referenced Frame Number anywhere in ``ds`` (Parametric Map functional groups)."""
    frames: set[int] = set()
    for element in ds.iterall():
        if element.keyword == "ReferencedFrameNumber":
            values = element.value if isinstance(element.value, MultiValue) else [element.value]
            frames.update(int(v) for v in values)
    return frames


def test_outputs_go_back_to_the_calling_orthanc(
    orthanc: Orthanc, in_process_node, sim_archive: dict[str, Path]
) -> None:
    # Orthanc is the calling AE, known in [[callers]]; any other caller is not sent back to.
    node, config = in_process_node(
        node={"send_back_to_caller": True, "caller_port": 0},
        callers=[{"ae_title": orthanc.aet, "port": orthanc.dicom_port}],
    )
    orthanc.add_modality("sswe", "SSWE_NODE", "127.0.0.1", node.port)
    [instance_id] = orthanc.upload([sim_archive["dual"]])
    orthanc.request("POST", "/modalities/sswe/store", instance_id)  # C-STORE from ORTHANC
    storescu_keep([sim_archive["bmode"]], node.port, calling_aet="SCANNER")
    cases = {c["calling_ae"]: c for c in _wait_settled(config, 2, timeout=60)}
    assert cases["ORTHANC"]["status"] == "done" and cases["SCANNER"]["status"] == "done"
    assert cases["ORTHANC"]["outputs"] == 2  # one frame: a Parametric Map and a Secondary Capture
    assert cases["ORTHANC"]["sends"]["sent"] == 2
    assert cases["SCANNER"]["outputs"] == 2 and sum(cases["SCANNER"]["sends"].values()) == 0
    store = _store(config)
    assert {s["destination"] for s in store.list_sends()} == {"caller:ORTHANC"}
    store.close()
    source_uid = str(dcmread(sim_archive["dual"], stop_before_pixels=True).SOPInstanceUID)
    derived = _derived(orthanc, source_uid)
    assert sorted(str(ds.SOPClassUID) for ds in derived) == [
        "1.2.840.10008.5.1.4.1.1.30",
        "1.2.840.10008.5.1.4.1.1.7",
    ]
    assert len(orthanc.instances()) == 3  # the source and its two outputs, nothing from SCANNER


def _multiframe_capture(dual: Path, out: Path, frames: int = 3) -> Dataset:
    """A multi-frame US instance: the dual capture as a short cine loop (jitter per frame)."""
    ds = dcmread(dual)
    rng = np.random.default_rng(7)
    first = ds.pixel_array.astype(np.int16)
    jitter = rng.integers(-3, 4, size=(frames - 1, *first.shape), dtype=np.int16)
    stack = np.concatenate([first[None], first[None] + jitter]).clip(0, 255).astype(np.uint8)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames = frames
    ds.FrameTime = 50.0
    ds.FrameIncrementPointer = Tag("FrameTime")
    ds.PixelData = stack.tobytes()
    ds.save_as(out, enforce_file_format=True)
    return ds


def test_multiframe_ultrasound_end_to_end(
    orthanc: Orthanc, in_process_node, sim_archive: dict[str, Path], tmp_path: Path
) -> None:
    node, config = in_process_node(orthanc.dicom_port)
    source = _multiframe_capture(sim_archive["dual"], tmp_path / "cine.dcm")
    storescu_keep([tmp_path / "cine.dcm"], node.port)
    [case] = _wait_settled(config, 1, timeout=60)
    assert (case["status"], case["layout"], case["frames"]) == ("done", "dual-swe", 3), case
    assert case["sop_class_uid"] == UltrasoundMultiFrameImageStorage
    assert case["outputs"] == 6 and case["sends"]["sent"] == 6
    derived = _derived(orthanc, str(source.SOPInstanceUID))
    maps = [ds for ds in derived if ds.SOPClassUID == PARAMETRIC_MAP]
    captures = [ds for ds in derived if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"]
    assert len(maps) == 3 and len(captures) == 3
    # One Parametric Map per source frame, each naming its frame (1-based).
    assert sorted(tuple(_referenced_frames(ds)) for ds in maps) == [(1,), (2,), (3,)]
    assert len({str(ds.SOPInstanceUID) for ds in derived}) == 6

"""Two `sswe-node serve` replicas on one PostgreSQL and one storage folder behave as one node.

One replica is killed with SIGKILL while its worker holds leased cases, in the middle of a
100-instance burst sent to both with dcmtk's storescu: every instance a replica acknowledged
is processed (the survivor takes the dead replica's cases back once their leases expire), and
every output is at the destination (a real Orthanc) exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sswe_node.node.schema import Case
from sswe_node.node.store import CaseStore
from tests.node_support import Postgres, ServeProcess, node_sections, write_config
from tests.peers import Orthanc, dcmtk_env

BURST = 100


def _sources(folder: Path, make_us_source: Any, count: int) -> list[Path]:
    """``count`` small ultrasound instances (240 x 320, one frame, about 80 kB each)."""
    folder.mkdir()
    paths = []
    for index in range(count):
        path = folder / f"us{index:03d}.dcm"
        make_us_source(seed=index).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _storescu(files: list[Path], port: int, calling_aet: str) -> subprocess.Popen[str]:
    """One association sending ``files`` in order; ``-v`` logs each file and its response."""
    return subprocess.Popen(
        ["/usr/bin/storescu", "-v", "-R", "-xe", "-aet", calling_aet, "-aec", "SSWE_NODE",
         "127.0.0.1", str(port), *map(str, files)],
        env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _acknowledged(output: str) -> list[str]:
    """The files storescu got a Success response for."""
    done, current = [], None
    for line in output.splitlines():
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current:
            done.append(current)
            current = None
    return done


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _leased_by_children_of(store: CaseStore, pid: int) -> int:
    """How many cases a worker process of the replica ``pid`` holds right now."""
    with store.session() as session:
        owners = session.scalars(select(Case.owner).where(Case.status == "processing")).all()
    return sum(1 for o in owners if o and _parent_of(int(o.split(":")[-2])) == pid)


def test_a_replica_killed_mid_burst_loses_nothing(
    tmp_path: Path, postgres: Postgres, orthanc: Orthanc, tiny_model_dir: Path,
    make_us_source: Any, require_dcmtk: None,
) -> None:  # fmt: skip
    url = postgres.create_database("replicas")
    storage = tmp_path / "shared-storage"
    sources = _sources(tmp_path / "sources", make_us_source, BURST)
    destination = {"name": "orthanc", "ae_title": orthanc.aet, "host": "127.0.0.1",
                   "port": orthanc.dicom_port}  # fmt: skip
    replicas = []
    for name in ("a", "b"):
        sections = node_sections(
            tmp_path / name,
            node={"storage_dir": str(storage), "database_url": url},
            model={"name": tiny_model_dir.name, "models_dir": str(tiny_model_dir.parent)},
            processing={
                "batch_size": 8,
                "batch_wait_seconds": 0.1,
                "lease_seconds": 2.0,
                "poll_seconds": 0.5,
            },  # fmt: skip
            logging={"level": "INFO"},
        )
        (tmp_path / name).mkdir()
        config = write_config(tmp_path / name / "node.toml", sections, [destination])
        port = int(sections["node"]["port"])
        replicas.append(ServeProcess(config, port, tmp_path / name / "serve.log"))
    a, b = replicas
    store = CaseStore(url)
    try:
        for replica in replicas:  # the models are loaded: the burst meets working workers
            replica.wait_log("event=warm-up ", timeout=120)
        to_a = 60  # the replica to be killed gets the larger share: the kill lands mid-burst
        senders = [_storescu(sources[:to_a], a.port, "SCU_A"),
                   _storescu(sources[to_a:], b.port, "SCU_B")]  # fmt: skip
        deadline = time.monotonic() + 120
        while _leased_by_children_of(store, a.process.pid) == 0:
            assert time.monotonic() < deadline, "replica a never held a case:\n" + a.log()[-3000:]
            assert senders[0].poll() is None, "the burst to replica a ended before the kill"
            time.sleep(0.02)
        a.kill()  # SIGKILL: its worker and sender processes die with it
        outputs = [s.communicate(timeout=300)[0] for s in senders]
        acknowledged = {Path(p).name for o in outputs for p in _acknowledged(o)}
        assert len(_acknowledged(outputs[0])) < to_a, "the kill came after a's burst"
        assert len(_acknowledged(outputs[1])) == BURST - to_a

        uids = {_uid_of(path) for path in sources if path.name in acknowledged}
        deadline = time.monotonic() + 180
        while True:
            cases = store.list_cases(limit=None)
            status = {c["sop_instance_uid"]: c["status"] for c in cases}
            sends = store.counts()["sends"]
            if (
                all(status.get(uid) == "done" for uid in uids)
                and not sends["queued"]
                and not [c for c in cases if c["status"] in ("received", "processing")]
            ):
                break
            assert time.monotonic() < deadline, f"not settled: {status} {sends}\n{b.log()[-3000:]}"
            time.sleep(0.3)
        done = [c for c in cases if c["status"] == "done"]
        assert {c["status"] for c in cases} == {"done"}
        assert sends["failed"] == 0
        # Exactly once at the destination: one Parametric Map and one Secondary Capture per
        # processed instance, no more, no fewer (Orthanc keeps one copy per SOP Instance UID).
        stored = orthanc.wait_for_instances(2 * len(done), timeout=60)
        assert len(stored) == 2 * len(done)
        assert len({i["MainDicomTags"]["SOPInstanceUID"] for i in stored}) == 2 * len(done)
        rows = store.list_sends()
        assert len(rows) == 2 * len(done) and {r["status"] for r in rows} == {"sent"}
        # The dead replica's leased cases were taken back by the survivor.
        assert "event=lease-taken-back" in b.log(), b.log()[-3000:]
    finally:
        store.close()
        for replica in replicas:
            if replica.process.poll() is None:
                assert replica.terminate() == 0


def _uid_of(path: Path) -> str:
    """The SOP Instance UID of a source file."""
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_a_worker_machine_processes_what_a_paused_receiver_keeps(
    tmp_path: Path, tiny_model_dir: Path, make_us_source: Any, require_dcmtk: None
) -> None:
    """`sswe-node worker` (no DICOM port) processes the cases a receiver only stored."""
    sources = _sources(tmp_path / "sources", make_us_source, 6)
    model = {"name": tiny_model_dir.name, "models_dir": str(tiny_model_dir.parent)}
    receiver = node_sections(tmp_path, processing={"paused": True})
    worker = node_sections(tmp_path, model=model, processing={"workers": 2, "batch_size": 2})
    worker["node"] = dict(receiver["node"])  # the same case store and storage folder
    serve_config = write_config(tmp_path / "serve.toml", receiver)
    worker_config = write_config(tmp_path / "worker.toml", worker)
    serve = ServeProcess(serve_config, int(receiver["node"]["port"]), tmp_path / "serve.log")
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    process = None
    store = CaseStore(receiver["node"]["database_url"])
    try:
        sender = _storescu(sources, serve.port, "SCU")
        assert len(_acknowledged(sender.communicate(timeout=120)[0])) == len(sources)
        assert {c["status"] for c in store.list_cases(limit=None)} == {"received"}
        process = subprocess.Popen(
            [sys.executable, "-m", "sswe_node.cli", "worker", "--config", str(worker_config)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while {c["status"] for c in store.list_cases(limit=None)} != {"done"}:
            assert process.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.2)
        assert len(store.list_cases(limit=None)) == len(sources)
        assert (tmp_path / "worker.log").read_text().count("event=process-started") == 2
    finally:
        store.close()
        if process is not None and process.poll() is None:
            process.terminate()
            assert process.wait(timeout=60) == 0
        log.close()
        assert serve.terminate() == 0


def test_a_crashed_worker_process_is_started_again(
    tmp_path: Path, tiny_model_dir: Path, make_us_source: Any, require_dcmtk: None
) -> None:
    """A worker process killed by the kernel (say, out of memory) is replaced; work goes on."""
    import os
    import signal

    from sswe_node.config import load_settings
    from sswe_node.node.app import Node

    model = {"name": tiny_model_dir.name, "models_dir": str(tiny_model_dir.parent)}
    sections = node_sections(tmp_path, model=model, processing={"poll_seconds": 0.5})
    node = Node(load_settings(write_config(tmp_path / "node.toml", sections)))
    node.start()
    try:
        deadline = time.monotonic() + 120
        while not node.workers[0].ready.is_set():
            assert time.monotonic() < deadline and node.workers[0].is_alive()
            time.sleep(0.1)
        first = node.workers[0].process.pid
        os.kill(first, signal.SIGKILL)
        while node.workers[0].process.pid == first or not node.workers[0].ready.is_set():
            assert time.monotonic() < deadline, "the worker process was not started again"
            time.sleep(0.1)
        sources = _sources(tmp_path / "sources", make_us_source, 2)
        _storescu(sources, node.port, "SCU").communicate(timeout=60)
        store = CaseStore(sections["node"]["database_url"])
        try:
            while {c["status"] for c in store.list_cases(limit=None)} != {"done"}:
                assert time.monotonic() < deadline, store.list_cases(limit=None)
                time.sleep(0.2)
        finally:
            store.close()
        assert node.health()["status"] == "ok"
    finally:
        node.stop(grace_seconds=10)

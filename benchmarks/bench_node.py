"""The node on the network: C-STORE ingest rate against dcmtk's storescp, end-to-end latency.

Measured in one run, on the same simulated files (uncompressed, about 1 MB each):

1. **Ingest**: ``sswe-node serve`` with processing paused (each instance written atomically
   with fsync and recorded in the SQLite case store before Success) against dcmtk's
   ``storescp`` writing the same files (no fsync, no database). One ``storescu`` association
   sends every file; the ratio is node rate / storescp rate.
2. **End to end**: the node with processing on, sending to a destination SCP run here; the
   latency of each instance is from the end of its C-STORE to the arrival of its last output
   at the destination (p50, p95); the throughput is instances per second over the whole burst.
3. **Pipeline**: ``benchmarks/bench_pipeline.py`` (the pipeline against the bare model's
   ``predict`` at the same batch size), run as part of this run unless ``--skip-pipeline``.

    .venv/bin/python benchmarks/bench_node.py                       # tiny untrained U-Net
    .venv/bin/python benchmarks/bench_node.py --model prostate-sim --count 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.node_support import write_config  # noqa: E402
from tests.peers import dcmtk_env, free_port, wait_for_port  # noqa: E402


def dcmtk(tool: str) -> str | None:
    """Return dcmtk's ``tool`` by absolute path: /usr/bin first, never a script of .venv/bin.

    pynetdicom installs scripts of the same names (storescu, storescp...) that take other
    options; with the environment activated they would come first on PATH.
    """
    venv_bin = Path(sys.prefix) / "bin"
    for folder in ("/usr/bin", *os.environ.get("PATH", "").split(os.pathsep)):
        found = shutil.which(tool, path=folder)
        if found and Path(found).parent.resolve() != venv_bin.resolve():
            return found
    return None


def _sources(tmp: Path, count: int) -> list[Path]:
    from training.simulate import write_archive

    planes = max(1, -(-count // 3))
    patients = max(1, -(-planes // 5))
    write_archive(tmp / "archive", patients=patients, seed=11, images_per_patient=5)
    index = json.loads((tmp / "archive" / "archive.json").read_text())
    return [tmp / "archive" / r["path"] for r in index["instances"]][:count]


def _model(name: str | None, tmp: Path) -> tuple[str, str]:
    if name:
        return name, str(ROOT / "models")
    from training.package import write_package
    from training.unet import build_unet

    write_package(
        build_unet((96, 64), filters=32, depth=2, seed=0), tmp / "models" / "bench-unet",
        name="bench-unet", version="0", organ="prostate", quantity="youngs-modulus",
        trained_on="nothing: untrained, for timing only", status="provisional",
    )  # fmt: skip
    return "bench-unet", str(tmp / "models")


def _storescu(files: list[Path], port: int, aec: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [dcmtk("storescu"), "-R", "-xe", "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
        env=dcmtk_env(), check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return time.perf_counter() - start


def _serve(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sswe_node.cli", "serve", "--config", str(config)],
        cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)


def measure_ingest(files: list[Path], tmp: Path, repeats: int) -> dict[str, float]:
    """Return the best ingest rate (instances/s) of the node and of storescp."""
    port = free_port()
    work = tmp / "ingest"
    work.mkdir()
    config = write_config(
        work / "node.toml",
        {
            "node": {
                "host": "127.0.0.1", "port": port, "storage_dir": str(work / "storage"),
                "database_url": f"sqlite:///{work / 'cases.db'}", "min_free_space_mb": 1,
            },
            "processing": {"paused": True},
            "logging": {"level": "WARNING"},
        },
    )  # fmt: skip
    node = _serve(config, work / "serve.log")
    try:
        wait_for_port(port, timeout=60)
        node_times = [_storescu(files, port, "SSWE_NODE") for _ in range(repeats)]
    finally:
        _stop(node)
    scp_port = free_port()
    out = work / "storescp"
    out.mkdir()
    storescp = subprocess.Popen(
        [dcmtk("storescp"), "-od", str(out), "+B", "-aet", "STORESCP", str(scp_port)],
        env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(scp_port, timeout=30)
        scp_times = [_storescu(files, scp_port, "STORESCP") for _ in range(repeats)]
    finally:
        storescp.terminate()
        storescp.wait(timeout=30)
    # Where the gap comes from: pynetdicom itself, with a handler that keeps nothing.
    noop = AE(ae_title="NOOP")
    noop.maximum_pdu_size = 0
    for context in AllStoragePresentationContexts:
        noop.add_supported_context(context.abstract_syntax)
    noop_port = free_port()
    server = noop.start_server(
        ("127.0.0.1", noop_port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0)]
    )
    try:
        noop_times = [_storescu(files, noop_port, "NOOP") for _ in range(repeats)]
    finally:
        server.shutdown()
    return {
        "node": len(files) / min(node_times),
        "storescp": len(files) / min(scp_times),
        "pynetdicom": len(files) / min(noop_times),
    }


class _Destination:
    """A destination SCP that notes when each source's outputs arrive."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.ae = AE(ae_title="BENCHDEST")
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax)
        self.ae.maximum_pdu_size = 0
        self.port = free_port()
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: evt.Event) -> int:
        ds = event.dataset
        source = ""
        if "SourceImageSequence" in ds:
            source = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        elif "ReferencedSeriesSequence" in ds:
            source = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
            source = source.ReferencedSOPInstanceUID
        with self.lock:
            self.arrivals.setdefault(str(source), []).append(time.perf_counter())
        return 0

    def stop(self) -> None:
        self.server.shutdown()


def measure_end_to_end(
    files: list[Path], tmp: Path, model: tuple[str, str], batch_size: int, log: Path | None = None
) -> dict[str, float]:
    """Send every file in one burst; return latency percentiles and throughput."""
    work = tmp / "e2e"
    work.mkdir()
    destination = _Destination()
    port, http_port = free_port(), free_port()
    config = write_config(
        work / "node.toml",
        {
            "node": {
                "host": "127.0.0.1", "port": port, "storage_dir": str(work / "storage"),
                "database_url": f"sqlite:///{work / 'cases.db'}", "min_free_space_mb": 1,
            },
            "model": {"name": model[0], "models_dir": model[1]},
            "processing": {"batch_size": batch_size, "batch_wait_seconds": 0.2},
            "http": {"enabled": True, "port": http_port},
            "logging": {"level": "INFO" if log else "WARNING"},
        },
        [{"name": "bench", "ae_title": "BENCHDEST", "host": "127.0.0.1",
          "port": destination.port}],
    )  # fmt: skip
    node = _serve(config, work / "serve.log")
    try:
        wait_for_port(port, timeout=60)
        deadline = time.monotonic() + 120
        while True:  # wait for the model, so its loading is not counted as latency
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health") as r:
                if json.loads(r.read())["model_loaded"]:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the model did not load")
            time.sleep(0.2)
        expected = 0
        datasets = []
        for f in files:
            datasets.append(dcmread(f))
        scu = AE(ae_title="BENCHSCU")
        for ds in datasets:
            scu.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        scu.maximum_pdu_size = 0
        sent: dict[str, float] = {}
        start = time.perf_counter()
        assoc = scu.associate("127.0.0.1", port, ae_title="SSWE_NODE")
        for ds in datasets:
            assoc.send_c_store(ds)
            sent[str(ds.SOPInstanceUID)] = time.perf_counter()
        assoc.release()
        expected = 2 * len(datasets)  # a Parametric Map and a Secondary Capture each
        deadline = time.monotonic() + 600
        while sum(len(v) for v in destination.arrivals.values()) < expected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        _stop(node)
        destination.stop()
        if log is not None:
            shutil.copy(work / "serve.log", log)
    latencies = sorted(
        max(destination.arrivals[uid]) - t for uid, t in sent.items() if uid in destination.arrivals
    )
    done = len(latencies)
    last = max(max(v) for v in destination.arrivals.values()) if destination.arrivals else start
    return {
        "instances": float(len(sent)),
        "completed": float(done),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": latencies[min(done - 1, int(0.95 * done))] if latencies else float("nan"),
        "throughput": done / (last - start) if done else 0.0,
    }


def main() -> int:
    """Run every measure and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30, help="instances sent (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="ingest repeats (best kept)")
    parser.add_argument("--model", default=None, help="packaged model (default: tiny U-Net)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument(
        "--log", type=Path, default=None, help="keep the end-to-end node's INFO log here"
    )
    args = parser.parse_args()
    if dcmtk("storescp") is None:
        print("dcmtk is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        files = _sources(tmp, args.count)
        size = sum(f.stat().st_size for f in files) / len(files) / 1e6
        print(f"{len(files)} simulated instances, {size:.2f} MB each on average; "
              f"{os.cpu_count()} CPUs")  # fmt: skip
        ingest = measure_ingest(files, tmp, args.repeats)
        print(
            f"ingest (processing paused): node {ingest['node']:.1f} inst/s, storescp "
            f"{ingest['storescp']:.1f} inst/s; ratio node/storescp = "
            f"{ingest['node'] / ingest['storescp']:.2f}"
        )
        print(
            f"  reference: pynetdicom SCP keeping nothing {ingest['pynetdicom']:.1f} inst/s "
            f"(ratio to storescp {ingest['pynetdicom'] / ingest['storescp']:.2f}); the rest of "
            "the node's time is durability: fsync of file and folder, a SQLite commit"
        )
        model = _model(args.model, tmp)
        e2e = measure_end_to_end(files, tmp, model, args.batch_size, args.log)
        print(
            f"end to end ({model[0]}, batch {args.batch_size}): "
            f"{e2e['completed']:.0f}/{e2e['instances']:.0f} instances, latency p50 "
            f"{e2e['p50']:.2f} s, p95 {e2e['p95']:.2f} s, throughput {e2e['throughput']:.2f} "
            f"inst/s; ratio throughput/ingest = {e2e['throughput'] / ingest['node']:.3f}"
        )
    if not args.skip_pipeline:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_pipeline.py"),
               "--batch-size", str(args.batch_size)]  # fmt: skip
        if args.model:
            cmd += ["--model", args.model]
        print("pipeline against the bare model (benchmarks/bench_pipeline.py):", flush=True)
        subprocess.run(cmd, cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

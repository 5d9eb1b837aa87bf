"""The node on the network: ingest against dcmtk's storescp, end to end, steady-state latency.

Measured in one run, on the same simulated files (uncompressed, about 1 MB each):

1. **Ingest**: ``sswe-node serve`` with processing paused (each instance written atomically
   with fsync and recorded in the SQLite case store before Success) against dcmtk's
   ``storescp --fork`` writing the same files (no fsync, no database), with 1 and with 4
   parallel ``storescu`` senders (the files split between them); the ratio is node / storescp.
2. **End to end**: the node with processing on (``processing.workers`` worker processes and a
   sender process), sending to a destination SCP run here. A burst of every file on one
   association: throughput (instances/s over the burst) and the latency of each instance, from
   the end of its C-STORE to the arrival of its last output (p50, p95). Then a steady stream
   at ``--rate`` captures/s (default 5): p50/p95 latency.
3. **Pipeline**: ``benchmarks/bench_pipeline.py`` at the same batch size and model (the rate the
   node's workers could reach alone); the end-to-end throughput is compared with it.

    .venv/bin/python benchmarks/bench_node.py                       # tiny untrained U-Net
    .venv/bin/python benchmarks/bench_node.py --model prostate-sim --count 60
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sswe_node.node.scp import _Contexts, _quiet_reactor  # noqa: E402
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


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[int, float, float]:
    """Return (parent pid, own CPU seconds, reaped children's CPU seconds) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (
        int(fields[1]),
        (int(fields[11]) + int(fields[12])) / _TICK,
        (int(fields[13]) + int(fields[14])) / _TICK,
    )


def _role(pid: int) -> str:
    """Name a process of the node by what it runs (Linux /proc)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if not command:  # ended, not yet reaped
            return "gone"
        if "resource_tracker" in command:
            return "resource-tracker"
        if "storescp" in command:
            return "storescp"
        if "multiprocessing" not in command:
            return "receiver"
        return "worker" if "tensorflow" in Path(f"/proc/{pid}/maps").read_text() else "sender"
    except OSError:
        return "gone"


def process_cpu(root: int) -> dict[int, tuple[str, float]]:
    """Return {pid: (role, CPU seconds)} for ``root`` and its descendants (Linux only).

    Reaped children's CPU is added to their parent (dcmtk's ``storescp --fork``).
    """
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent, own, reaped = _proc_stat(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
            stats[int(entry.name)] = (parent, own + reaped)
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, (parent, _) in stats.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return {pid: (_role(pid), stats[pid][1]) for pid in tree if pid in stats}


class CpuMeter:
    """CPU seconds spent between :meth:`start` and :meth:`stop`, per node process and here.

    ``here`` is this benchmark process (its SCU and destination threads); ``peers`` the reaped
    child processes of this one (dcmtk's storescu).
    """

    def __init__(self, root: int | None) -> None:
        self.root = root

    def start(self) -> CpuMeter:
        self._before = process_cpu(self.root) if self.root else {}
        self._here = time.process_time()
        self._peers = _children_cpu()
        return self

    def stop(self) -> dict[str, float]:
        after = process_cpu(self.root) if self.root else {}
        spent: dict[str, float] = {}
        for pid, (role, seconds) in after.items():
            before = self._before.get(pid, (role, 0.0))[1]
            spent[role] = spent.get(role, 0.0) + seconds - before
        spent["bench"] = time.process_time() - self._here
        spent["storescu"] = _children_cpu() - self._peers
        return spent


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_line(spent: dict[str, float], count: int) -> str:
    """Format CPU seconds as milliseconds per instance, per process role."""
    parts = [f"{role} {seconds / count * 1000:.1f}" for role, seconds in sorted(spent.items())
             if seconds > 0.0005 and role not in ("resource-tracker", "gone")]  # fmt: skip
    return "CPU ms/instance: " + ", ".join(parts)


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


def _storescu(files: list[Path], port: int, aec: str, senders: int = 1) -> float:
    """Send ``files`` with ``senders`` parallel storescu processes; return the wall time."""
    start = time.perf_counter()
    shares = [files[i::senders] for i in range(senders)]
    command = [dcmtk("storescu"), "-R", "-xe", "-aec", aec, "127.0.0.1", str(port)]
    running = [
        subprocess.Popen(
            [*command, *map(str, share)],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for share in shares
        if share
    ]
    for process in running:
        _, err = process.communicate(timeout=600)
        if process.returncode:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - start


def _serve(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sswe_node.cli", "serve", "--config", str(config)],
        cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip


def _settle(pid: int, quiet: float = 0.02, timeout: float = 60.0) -> None:
    """Wait until the node's processes have started (their CPU use has come down).

    The node starts its worker and sender processes after its port opens; their imports
    would otherwise be counted in the first measure.
    """
    deadline = time.monotonic() + timeout
    last = sum(seconds for _, seconds in process_cpu(pid).values())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(seconds for _, seconds in process_cpu(pid).values())
        if now - last < quiet:
            return
        last = now


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)


def paused_node_config(work: Path, port: int, name: str) -> Path:
    """Write ``work/<name>.toml``: a node on ``port`` that only receives (processing paused)."""
    return write_config(
        work / f"{name}.toml",
        {
            "node": {
                "host": "127.0.0.1", "port": port, "storage_dir": str(work / "storage"),
                "database_url": f"sqlite:///{work / 'cases.db'}", "min_free_space_mb": 1,
            },
            "processing": {"paused": True},
            "logging": {"level": "WARNING"},
        },
    )  # fmt: skip


def measure_ingest(
    files: list[Path], tmp: Path, repeats: int, senders: tuple[int, ...] = (1, 4)
) -> dict[str, Any]:
    """Return the best ingest rates (instances/s) of the node and of storescp, per sender count.

    Keys ``node-N``, ``storescp-N`` for N parallel senders, and ``pynetdicom`` (1 sender);
    ``cpu-node-N``, ``cpu-storescp-N``: the CPU per instance of each process, as text.
    """
    port = free_port()
    work = tmp / "ingest"
    work.mkdir()
    config = paused_node_config(work, port, "node")
    rates: dict[str, Any] = {}
    scp_port = free_port()
    out = work / "storescp"
    out.mkdir()
    node = _serve(config, work / "serve.log")
    storescp = subprocess.Popen(
        [dcmtk("storescp"), "--fork", "-od", str(out), "+B", "-aet", "STORESCP", str(scp_port)],
        env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    targets = {
        "node": (node.pid, port, "SSWE_NODE"),
        "storescp": (storescp.pid, scp_port, "STORESCP"),
    }
    try:
        wait_for_port(port, timeout=60)
        wait_for_port(scp_port, timeout=30)
        _storescu(files[:2], port, "SSWE_NODE")  # warm-up: first imports, first commit
        _settle(node.pid)
        for n in senders:
            # Node and storescp runs alternate (the order too), so that both see the same
            # machine: the other work on a shared machine comes and goes.
            times: dict[str, list[float]] = {name: [] for name in targets}
            spent: dict[str, dict[str, float]] = {name: {} for name in targets}
            for repeat in range(repeats):
                order = list(targets) if repeat % 2 == 0 else list(targets)[::-1]
                for name in order:
                    pid, target_port, aet = targets[name]
                    meter = CpuMeter(pid).start()
                    times[name].append(_storescu(files, target_port, aet, n))
                    for role, seconds in meter.stop().items():
                        spent[name][role] = spent[name].get(role, 0.0) + seconds
            for name in targets:
                rates[f"{name}-{n}"] = len(files) / min(times[name])
                rates[f"cpu-{name}-{n}"] = _cpu_line(spent[name], len(files) * repeats)
    finally:
        _stop(node)
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
    rates["pynetdicom"] = len(files) / min(noop_times)
    return rates


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
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_CONN_OPEN, _quiet_reactor)],
        )
        # A destination's association set-up and idle polling are not the node's cost: the
        # contexts are copied fast for each association and the reactor waits on its queue, as
        # the node's SCP does (a PACS is not pynetdicom; here it shares the node's 2 cores).
        self.server.contexts = _Contexts(self.server.contexts)

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


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return float("nan"), float("nan")
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _wait_arrivals(destination: _Destination, expected: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in destination.arrivals.values()) < expected:
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


def measure_end_to_end(
    files: list[Path],
    tmp: Path,
    model: tuple[str, str],
    batch_size: int,
    log: Path | None = None,
    workers: int = 1,
    rate: float = 5.0,
    steady_count: int = 0,
    threads: bool = False,
) -> dict[str, Any]:
    """Send every file in one burst, then a steady stream; return throughput and latencies."""
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
            "processing": {"batch_size": batch_size, "batch_wait_seconds": 0.2,
                           "workers": workers, "processes": not threads},
            "http": {"enabled": True, "port": http_port},
            "logging": {"level": "INFO" if log else "WARNING"},
        },
        [{"name": "bench", "ae_title": "BENCHDEST", "host": "127.0.0.1",
          "port": destination.port}],
    )  # fmt: skip
    node = _serve(config, work / "serve.log")
    result: dict[str, Any] = {}
    cpu: dict[str, str] = {}
    result["cpu"] = cpu
    try:
        wait_for_port(port, timeout=60)
        deadline = time.monotonic() + 180
        while True:  # wait for the model, so its loading is not counted as latency
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health") as r:
                if json.loads(r.read())["model_loaded"]:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the model did not load")
            time.sleep(0.2)
        datasets = [dcmread(f, stop_before_pixels=True) for f in files]
        _settle(node.pid)
        scu = AE(ae_title="BENCHSCU")
        for pair in dict.fromkeys(
            (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets
        ):
            scu.add_requested_context(*pair)  # once each: at most 128 contexts
        scu.maximum_pdu_size = 0

        # Burst: every file on one association, as fast as the node acknowledges.
        sent: dict[str, float] = {}
        meter = CpuMeter(node.pid).start()
        start = time.perf_counter()
        # The files are streamed as stored (as a scanner sends them), not decoded and
        # encoded again by this process: that CPU is the client's, not the node's.
        _config.STORE_SEND_CHUNKED_DATASET = True
        assoc = scu.associate("127.0.0.1", port, ae_title="SSWE_NODE")
        for path, ds in zip(files, datasets, strict=True):
            assoc.send_c_store(path)
            sent[str(ds.SOPInstanceUID)] = time.perf_counter()
        assoc.release()
        _wait_arrivals(destination, 2 * len(datasets))  # a Parametric Map and a Capture each
        cpu["burst"] = _cpu_line(meter.stop(), len(datasets))
        arrivals = dict(destination.arrivals)
        latencies = [max(arrivals[u]) - t for u, t in sent.items() if u in arrivals]
        last = max(max(v) for v in arrivals.values()) if arrivals else start
        result["instances"] = float(len(sent))
        result["completed"] = float(len(latencies))
        result["p50"], result["p95"] = _percentiles(latencies)
        result["throughput"] = len(latencies) / (last - start) if latencies else 0.0

        # Steady: one capture every 1/rate s (the same files again: resends, new outputs).
        if steady_count:
            time.sleep(1.0)
            with destination.lock:
                destination.arrivals.clear()
            pairs = list(zip(files, datasets, strict=True))
            steady = (pairs * (1 + steady_count // len(pairs)))[:steady_count]
            sent_at: dict[str, float] = {}
            meter = CpuMeter(node.pid).start()
            assoc = scu.associate("127.0.0.1", port, ae_title="SSWE_NODE")
            t0 = time.perf_counter()
            for i, (path, ds) in enumerate(steady):
                pause = t0 + i / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                assoc.send_c_store(path)
                sent_at[str(ds.SOPInstanceUID)] = time.perf_counter()
            assoc.release()
            _wait_arrivals(destination, 2 * len(steady), timeout=120)
            cpu["steady"] = _cpu_line(meter.stop(), len(steady))
            arrivals = dict(destination.arrivals)
            steady_latencies = [max(arrivals[u]) - t for u, t in sent_at.items() if u in arrivals]
            result["steady_completed"] = float(len(steady_latencies))
            result["steady_p50"], result["steady_p95"] = _percentiles(steady_latencies)
    finally:
        _stop(node)
        destination.stop()
        if log is not None:
            shutil.copy(work / "serve.log", log)
    return result


def measure_pipeline(model: str | None, batch_size: int) -> dict[str, float]:
    """Run benchmarks/bench_pipeline.py; return its rates (instances/s, frames/s)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_pipeline.py"),
           "--batch-size", str(batch_size), "--repeats", "3"]  # fmt: skip
    if model:
        cmd += ["--model", model]
    # The same tree as this benchmark's node (not another installed copy of sswe_node).
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    print(done.stdout, end="", flush=True)
    if "pipeline:" not in done.stdout:
        print(f"bench_pipeline.py failed: {done.stderr[-1500:]}", flush=True)
    rates: dict[str, float] = {}
    for line in done.stdout.splitlines():
        if line.startswith("pipeline:"):
            rates["pipeline"] = float(line.split("ms/batch")[1].split()[0])
        elif line.startswith("bare model.predict:"):
            rates["predict_frames"] = float(line.split("ms/batch")[1].split()[0])
    return rates


def _pipeline_rate(model: str | None, batch_size: int, when: str) -> float:
    """Run bench_pipeline.py; print its figures and return its rate (0 when it failed)."""
    print(
        f"pipeline against the bare model (benchmarks/bench_pipeline.py), {when} the end-to-end "
        f"run, load average {os.getloadavg()[0]:.1f}:",
        flush=True,
    )
    return measure_pipeline(model, batch_size).get("pipeline", 0.0)


def main() -> int:
    """Run every measure and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30, help="instances sent (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="ingest repeats (best kept)")
    parser.add_argument("--model", default=None, help="packaged model (default: tiny U-Net)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="node worker processes")
    parser.add_argument(
        "--threads", action="store_true", help="the 0.1.0 layout: one process, worker threads"
    )
    parser.add_argument("--rate", type=float, default=5.0, help="steady captures per second")
    parser.add_argument("--steady", type=int, default=40, help="instances sent at --rate")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument(
        "--log", type=Path, default=None, help="keep the end-to-end node's INFO log here"
    )
    args = parser.parse_args()
    if shutil.which("storescp") is None:
        print("dcmtk is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        files = _sources(tmp, args.count)
        size = sum(f.stat().st_size for f in files) / len(files) / 1e6
        print(f"{len(files)} simulated instances, {size:.2f} MB each on average; "
              f"{os.cpu_count()} CPUs", flush=True)  # fmt: skip
        if not args.skip_ingest:
            ingest = measure_ingest(files, tmp, args.repeats)
            for n in (1, 4):
                node, scp = ingest[f"node-{n}"], ingest[f"storescp-{n}"]
                print(f"ingest, {n} sender(s) (processing paused): node {node:.1f} inst/s, "
                      f"storescp --fork {scp:.1f} inst/s; ratio node/storescp = "
                      f"{node / scp:.2f} (load average {os.getloadavg()[0]:.1f})")  # fmt: skip
                print(f"  node     {ingest[f'cpu-node-{n}']}")
                print(f"  storescp {ingest[f'cpu-storescp-{n}']}", flush=True)
            print(f"  reference: pynetdicom SCP keeping nothing, 1 sender "
                  f"{ingest['pynetdicom']:.1f} inst/s", flush=True)  # fmt: skip
        model = _model(args.model, tmp)
        pipeline: list[float] = []
        if not args.skip_pipeline:
            # Measured just before and just after the end-to-end run, and the faster of the two
            # kept as the baseline: the other work on a shared machine comes and goes.
            pipeline.append(_pipeline_rate(args.model, args.batch_size, "before"))
        e2e = measure_end_to_end(
            files,
            tmp,
            model,
            args.batch_size,
            args.log,
            args.workers,
            args.rate,
            args.steady,
            args.threads,
        )
        print(
            f"end to end ({model[0]}, batch {args.batch_size}, {args.workers} worker "
            f"{'thread' if args.threads else 'process'}(es)): burst "
            f"{e2e['completed']:.0f}/{e2e['instances']:.0f} instances, "
            f"latency p50 {e2e['p50']:.2f} s, p95 {e2e['p95']:.2f} s, throughput "
            f"{e2e['throughput']:.2f} inst/s (load average {os.getloadavg()[0]:.1f})", flush=True,
        )  # fmt: skip
        if "burst" in e2e["cpu"]:
            print(f"  {e2e['cpu']['burst']}")
        if args.steady:
            print(
                f"steady {args.rate:g} captures/s: {e2e['steady_completed']:.0f}/{args.steady} "
                f"instances, latency p50 {e2e['steady_p50']:.2f} s, p95 "
                f"{e2e['steady_p95']:.2f} s", flush=True,
            )  # fmt: skip
            if "steady" in e2e["cpu"]:
                print(f"  {e2e['cpu']['steady']}")
        if not args.skip_pipeline:
            pipeline.append(_pipeline_rate(args.model, args.batch_size, "after"))
            rates = [rate for rate in pipeline if rate > 0]
            if rates:
                each = " and ".join(f"{e2e['throughput'] / rate:.2f}" for rate in rates)
                print(
                    f"ratio end-to-end throughput / pipeline rate = "
                    f"{e2e['throughput'] / max(rates):.2f} (the faster pipeline run; {each} "
                    "against each)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

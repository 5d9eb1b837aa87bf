"""Would several receiving processes on one port (``SO_REUSEPORT``) help parallel senders?

Two paused ``sswe-node serve`` processes on two ports share one case store and one storage
folder (what ``SO_REUSEPORT`` would give on one port: the kernel spreads the associations over
the processes); 4 parallel ``storescu`` senders go either all to one of them, or 2 to each.
The ratio (2 processes / 1 process) says whether building ``SO_REUSEPORT`` receivers is worth it
on this machine.

    .venv/bin/python benchmarks/bench_receivers.py --count 40
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_node  # noqa: E402

from tests.peers import free_port, wait_for_port  # noqa: E402


def _send(files: list[Path], ports: list[int], senders: int) -> float:
    start = time.perf_counter()
    running = []
    for i in range(senders):
        command = [bench_node.dcmtk("storescu"), "-R", "-xe", "-aec", "SSWE_NODE", "127.0.0.1"]
        command += [str(ports[i % len(ports)]), *map(str, files[i::senders])]
        running.append(
            subprocess.Popen(
                command,
                env=bench_node.dcmtk_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    for process in running:
        process.wait(timeout=600)
    return time.perf_counter() - start


def main() -> int:
    """Measure 4 senders against one and against two receiving processes, alternated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        files = bench_node._sources(tmp, args.count)
        work = tmp / "work"
        work.mkdir()
        ports = [free_port(), free_port()]
        nodes = []
        for index, port in enumerate(ports):
            nodes.append(
                bench_node._serve(
                    bench_node.paused_node_config(work, port, f"n{index}"), work / f"{index}.log"
                )
            )
            wait_for_port(port, timeout=60)
        try:
            _send(files[:4], ports, 2)  # warm-up
            one, two = [], []
            for _ in range(args.repeats):
                one.append(_send(files, ports[:1], 4))
                two.append(_send(files, ports, 4))
        finally:
            for node in nodes:
                bench_node._stop(node)
    print(
        f"4 senders, {len(files)} instances: 1 receiving process {len(files) / min(one):.1f} "
        f"inst/s, 2 receiving processes {len(files) / min(two):.1f} inst/s; ratio "
        f"{min(one) / min(two):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

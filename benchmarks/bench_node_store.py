"""The node's ingest rate with the case store on PostgreSQL, against SQLite (WAL) in the same run.

``sswe-node serve`` with processing paused receives the same simulated files (about 1 MB each)
over one ``storescu`` association; each instance is written with fsync and recorded in the case
store before Success. The baseline is the default store, an SQLite file in WAL mode; the
measure is a throwaway PostgreSQL server started here (``initdb``/``pg_ctl``, ``fsync=on`` as
in production, on a free loopback port). Printed: instances per second of each and the ratio
PostgreSQL / SQLite.

    .venv/bin/python benchmarks/bench_node_store.py --count 60
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_node import _serve, _sources, _stop, _storescu  # noqa: E402
from tests.node_support import Postgres, write_config  # noqa: E402
from tests.peers import free_port, wait_for_port  # noqa: E402


def _start(work: Path, database_url: str) -> tuple[subprocess.Popen, int]:
    """Start ``sswe-node serve`` (processing paused) on this case store; return it, its port."""
    work.mkdir()
    port = free_port()
    sections = {
        "node": {
            "host": "127.0.0.1", "port": port, "storage_dir": str(work / "storage"),
            "database_url": database_url, "min_free_space_mb": 1,
        },
        "processing": {"paused": True},
        "logging": {"level": "WARNING"},
    }  # fmt: skip
    node = _serve(write_config(work / "node.toml", sections), work / "serve.log")
    wait_for_port(port, timeout=60)
    return node, port


def measure(files: list[Path], ports: dict[str, int], repeats: int) -> dict[str, float]:
    """Return the best ingest rate (instances/s) of each node; runs alternate between nodes so
    that load from other processes on the machine falls on both alike."""
    times: dict[str, list[float]] = {name: [] for name in ports}
    for _ in range(repeats):
        for name, port in ports.items():
            times[name].append(_storescu(files, port, "SSWE_NODE"))
    return {name: len(files) / min(t) for name, t in times.items()}


def main() -> int:
    """Measure both stores and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30, help="instances sent (default 30)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (best kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        files = _sources(tmp, args.count)
        print(f"{len(files)} simulated instances; {os.cpu_count()} CPUs")
        server = Postgres(fsync=True)
        nodes = []
        try:
            for name, url in (
                ("sqlite", f"sqlite:///{tmp / 'cases.db'}"),
                ("postgresql", server.create_database("bench")),
            ):
                nodes.append(_start(tmp / name, url))
            rates = measure(files, {"sqlite": nodes[0][1], "postgresql": nodes[1][1]}, args.repeats)
        finally:
            for node, _ in nodes:
                _stop(node)
            server.stop()
    sqlite, postgres = rates["sqlite"], rates["postgresql"]
    print(f"ingest with SQLite (WAL): {sqlite:.1f} inst/s")
    print(f"ingest with PostgreSQL:   {postgres:.1f} inst/s; ratio PostgreSQL/SQLite = "
          f"{postgres / sqlite:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

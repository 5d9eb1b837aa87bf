"""Time until a sender is served again while N half-open peers hold connections (issue 11).

Each half-open peer opens TCP and sends the 6-byte header of an A-ASSOCIATE-RQ announcing
1000 bytes that never come. Then dcmtk's echoscu is tried every 0.2 s; the figure is the
time to its first success (and how long the node takes to close the half-open connections).
The node runs in this process with its default settings (``max_associations = 10``).

    .venv/bin/python benchmarks/bench_half_open.py --peers 10
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sswe_node.config import load_settings  # noqa: E402
from sswe_node.node.app import Node  # noqa: E402
from tests.node_support import node_sections, write_config  # noqa: E402
from tests.peers import echoscu  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--give-up", type=float, default=90.0, help="seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-half-open-") as tmp:
        sections = node_sections(Path(tmp), processing={"paused": True})
        node = Node(load_settings(write_config(Path(tmp) / "node.toml", sections)))
        node.start()
        peers = []
        try:
            for _ in range(args.peers):
                sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
                sock.sendall(struct.pack(">BBL", 0x01, 0x00, 1000))
                peers.append(sock)
            started = time.monotonic()
            served = None
            while time.monotonic() - started < args.give_up:
                if echoscu(node.port, called_aet="SSWE_NODE"):
                    served = time.monotonic() - started
                    break
                time.sleep(0.2)
            closed = 0
            for sock in peers:
                sock.settimeout(max(0.1, args.give_up - (time.monotonic() - started)))
                try:
                    closed += sock.recv(1) == b""
                except TimeoutError:
                    pass  # still held open by the node
                except OSError:  # reset by the node
                    closed += 1
            print(
                f"peers={args.peers} served_after_s="
                f"{'never' if served is None else f'{served:.2f}'} "
                f"(gave up after {args.give_up:.0f} s) half_open_closed_by_node={closed}"
                f" after_s={time.monotonic() - started:.1f}"
            )
        finally:
            for sock in peers:
                sock.close()
            node.stop(grace_seconds=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

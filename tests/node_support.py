"""Helpers for the node tests: configuration files, the `serve` subprocess, storescu options."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from sswe_node.config import load_settings
from sswe_node.node.app import Node
from tests.peers import dcmtk_env, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent

# storescu option proposing a file's own (compressed) transfer syntax, so it is sent unchanged.
_STORESCU_SYNTAX_OPTION = {
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
}


def _toml_plain(value: Any) -> Any:
    """What TOML holds: tables, arrays, booleans, numbers; anything else as its text."""
    if isinstance(value, dict):
        return {str(k): _toml_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_toml_plain(v) for v in value]
    return value if isinstance(value, bool | int | float | str) else str(value)


def write_config(
    path: Path,
    sections: dict[str, dict[str, Any]],
    destinations: Sequence[dict[str, Any]] = (),
    callers: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write a node TOML configuration with tomli-w (unset keys keep their defaults)."""
    import tomli_w

    data: dict[str, Any] = dict(sections)
    for table, entries in (("destinations", destinations), ("callers", callers)):
        if entries:
            data[table] = list(entries)
    path.write_text(tomli_w.dumps(_toml_plain(data)))
    return path


def node_sections(workdir: Path, port: int | None = None, **extra: dict[str, Any]) -> dict:
    """Return configuration sections for a test node living in ``workdir`` on loopback."""
    sections: dict[str, dict[str, Any]] = {
        "node": {
            "host": "127.0.0.1",
            "port": port or free_port(),
            "storage_dir": str(workdir / "storage"),
            "database_url": f"sqlite:///{workdir / 'cases.db'}",
            "min_free_space_mb": 1,
        },
        "model": {"models_dir": str(ROOT / "models")},
        "sending": {"initial_backoff_seconds": 0.5, "max_backoff_seconds": 2.0},
    }
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    return sections


#: Starts a test node: keyword arguments are configuration sections (see :func:`paused_nodes`).
StartNode = Callable[..., Node]


@contextmanager
def paused_nodes(workdir: Path) -> Iterator[StartNode]:
    """Yield a function starting in-process nodes with processing paused (receive and store only).

    Each node lives in ``workdir`` (configuration ``node.toml``); keyword arguments are extra
    configuration sections, as for :func:`node_sections`. Every node started is stopped on exit.
    """
    nodes: list[Node] = []

    def _start(**extra: dict) -> Node:
        sections = node_sections(workdir, **{"processing": {"paused": True}, **extra})
        node = Node(load_settings(write_config(workdir / "node.toml", sections)))
        node.start()
        nodes.append(node)
        return node

    try:
        yield _start
    finally:
        for node in nodes:
            node.stop(grace_seconds=5)


def echo_while_holding(port: int) -> tuple[AE, subprocess.CompletedProcess[str]]:
    """Hold one association (pynetdicom, ``HOLDER``) while dcmtk's echoscu (``SECOND``) calls.

    Returns the holder's AE (Verification proposed) and echoscu's result; the held association
    is released before returning.
    """
    scu = AE(ae_title="HOLDER")
    scu.add_requested_context(Verification)
    held = scu.associate("127.0.0.1", port, ae_title="SSWE_NODE")
    assert held.is_established
    try:
        second = subprocess.run(
            ["echoscu", "-aet", "SECOND", "-aec", "SSWE_NODE", "127.0.0.1", str(port)],
            env=dcmtk_env(), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        held.release()
    return scu, second


def storescu_keep(
    files: Sequence[str | Path],
    port: int,
    *,
    called_aet: str = "SSWE_NODE",
    calling_aet: str = "STORESCU",
    extra: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Send each file with dcmtk's storescu in its own transfer syntax (one association each)."""
    result: subprocess.CompletedProcess[str] | None = None
    for f in files:
        syntax = str(read_file_meta_info(f).TransferSyntaxUID)
        option = _STORESCU_SYNTAX_OPTION.get(syntax, "-xe")
        cmd = [
            "storescu", "-R", option, "-aet", calling_aet, "-aec", called_aet, *extra,
            "127.0.0.1", str(port), str(f),
        ]  # fmt: skip
        result = subprocess.run(
            cmd, env=dcmtk_env(), capture_output=True, text=True, check=check, timeout=120
        )
        if result.returncode != 0:
            return result
    assert result is not None
    return result


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """Create a self-signed certificate for 127.0.0.1 with openssl; return (key, certificate)."""
    key, cert = folder / "node.key", folder / "node.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def sswe_node(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the ``sswe-node`` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "sswe_node.cli", *args],
        cwd=ROOT, capture_output=True, text=True, check=check, timeout=timeout,
    )  # fmt: skip


class ServeProcess:
    """``sswe-node serve`` as a subprocess, with its log in ``log_path``."""

    def __init__(self, config: Path, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "a")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sswe_node.cli", "serve", "--config", str(config)],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            wait_for_port(port, timeout=60)
        except TimeoutError:
            self.kill()
            raise RuntimeError("serve did not start:\n" + self.log()[-3000:]) from None

    def log(self) -> str:
        """Return the log so far."""
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 120.0) -> None:
        """Wait until ``text`` appears in the log."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def terminate(self, timeout: float = 60.0) -> int:
        """Send SIGTERM and wait for a clean exit; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=timeout)
        self._log.close()
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL the node (a crash)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


class Postgres:
    """A throwaway PostgreSQL cluster (Debian's server programs) on a free loopback port.

    ``initdb`` refuses to run as root, so as root the cluster is made and run by the ``postgres``
    user (``runuser``) in a folder of its own under the system temporary folder (pytest's
    ``tmp_path`` is private to root). Authentication is ``trust`` on loopback only.

    Parameters
    ----------
    fsync : bool
        Keep PostgreSQL's durable commits (for benchmarks); tests turn them off for speed.
    """

    def __init__(self, fsync: bool = False) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError("PostgreSQL is not installed (run ./scripts/setup.sh)")
        bindir = Path(found[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="sswe-pg-"))
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self._pg_ctl = [*self._as_user, str(bindir / "pg_ctl"), "-D", str(self.folder / "data")]
        self._run(
            str(bindir / "initdb"), "-D", str(self.folder / "data"), "-A", "trust", "-U", "sswe",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        if not fsync:
            options += " -c fsync=off"
        self._run(*self._pg_ctl[len(self._as_user) :], "-l", str(self.folder / "log"), "-w",
                  "-o", options, "start")  # fmt: skip
        self.url = f"postgresql://sswe@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self._as_user, *cmd], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {done.stderr[-2000:]}")

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL (driver left to the store)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://sswe@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server at once and remove its folder."""
        subprocess.run([*self._pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)

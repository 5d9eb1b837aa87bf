"""Real DICOM peers for the tests: Orthanc (Debian package) and dcmtk's command-line tools."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Orthanc's DICOMweb plugin as the Debian package ``orthanc-dicomweb`` installs it.
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    """Return a TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_env() -> dict[str, str]:
    """Environment for dcmtk programs (TCP_NODELAY avoids a ~45 ms stall per instance)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def storescu(
    files: Sequence[str | Path],
    port: int,
    *,
    called_aet: str = "SSWE_NODE",
    calling_aet: str = "STORESCU",
    host: str = "127.0.0.1",
    extra: Sequence[str] = (),
    check: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Send files with dcmtk's ``storescu`` (proposing only the classes sent, keeping syntaxes)."""
    cmd = [
        "storescu", "-R", "-xs", "-aet", calling_aet, "-aec", called_aet,
        *extra, host, str(port), *[str(f) for f in files],
    ]  # fmt: skip
    return subprocess.run(
        cmd, env=dcmtk_env(), capture_output=True, text=True, check=check, timeout=timeout
    )


def echoscu(port: int, *, called_aet: str, calling_aet: str = "ECHOSCU") -> bool:
    """Return whether dcmtk's ``echoscu`` gets a successful C-ECHO from the peer."""
    result = subprocess.run(
        ["echoscu", "-aet", calling_aet, "-aec", called_aet, "127.0.0.1", str(port)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return result.returncode == 0


class Orthanc:
    """A real Orthanc server on loopback ports, with its own storage, for one test or session.

    Parameters
    ----------
    workdir : Path
        Folder for its configuration, storage and log.
    aet : str
        Its AE title.
    modalities : dict, optional
        ``{name: (aet, host, port)}`` peers it may C-MOVE to.
    dicom_port : int, optional
        Its DICOM port (default: a free one), e.g. one a node was told to send to earlier.
    dicomweb : bool
        Load the DICOMweb plugin (Debian ``orthanc-dicomweb``): QIDO-RS, WADO-RS and STOW-RS
        under :attr:`dicomweb_url` (``http://127.0.0.1:PORT/dicom-web``).
    users : dict, optional
        ``{user: password}``: HTTP basic authentication required (REST and DICOMweb).
    """

    def __init__(
        self,
        workdir: Path,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        dicom_port: int | None = None,
        dicomweb: bool = False,
        users: dict[str, str] | None = None,
    ) -> None:
        if shutil.which("Orthanc") is None:
            raise RuntimeError("Orthanc is not installed (run ./scripts/setup.sh)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.dicom_port = dicom_port or free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        config = {
            "Name": "sswe-test",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "UnknownSopClassAccepted": True,
            "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
            "Plugins": [],
            "ConcurrentJobs": 2,
            "StorageCompression": False,
            "HttpDescribeErrors": True,
        }
        if dicomweb:
            if not Path(DICOMWEB_PLUGIN).is_file():
                raise RuntimeError(f"{DICOMWEB_PLUGIN} is missing (run ./scripts/setup.sh)")
            config["Plugins"] = [DICOMWEB_PLUGIN]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "Ssl": False}
        self._auth = None
        if users:
            config["AuthenticationEnabled"] = True
            config["RegisteredUsers"] = dict(users)
            user, password = next(iter(users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._auth = f"Basic {token}"
        self.config_path = self.workdir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self._log = open(self.workdir / "orthanc.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["Orthanc", str(self.config_path)], stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.workdir / "orthanc.log").read_text()[-2000:]
                raise RuntimeError(f"Orthanc exited early:\n{log}")
            try:
                self.get("/system")
                wait_for_port(self.dicom_port, timeout=5)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise TimeoutError("Orthanc did not start")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call Orthanc's REST API and return the decoded JSON (or raw bytes)."""
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if self._auth:
            req.add_header("Authorization", self._auth)
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            if resp.headers.get_content_type() == "application/json":
                return json.loads(raw)
            return raw

    def get(self, path: str) -> Any:
        """GET a REST path."""
        return self.request("GET", path)

    def upload(self, files: Iterable[str | Path]) -> list[str]:
        """Store files through the REST API; return the Orthanc instance ids."""
        ids = []
        for f in files:
            ids.append(self.request("POST", "/instances", Path(f).read_bytes())["ID"])
        return ids

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Declare a DICOM peer (for C-MOVE destinations and C-GET/C-FIND callers)."""
        self.request("PUT", f"/modalities/{name}", {"AET": aet, "Host": host, "Port": port})

    def instances(self) -> list[dict[str, Any]]:
        """Return the expanded list of stored instances with their main tags."""
        return self.get("/instances?expand")

    def instance_file(self, instance_id: str) -> bytes:
        """Return the stored DICOM file of an instance."""
        return self.get(f"/instances/{instance_id}/file")

    def wait_for_instances(self, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` instances are stored; return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.instances()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> Orthanc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

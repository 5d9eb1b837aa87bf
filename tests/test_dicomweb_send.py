"""STOW-RS destinations: the persistent queue sends by DICOMweb to a real Orthanc, and to a
small HTTP peer that fails on purpose (503, a time-out, 4xx, partial failures)."""

from __future__ import annotations

import email
import io
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from sswe_node.cli import main
from sswe_node.config import Destination, SendingSettings, TlsSettings, load_settings
from sswe_node.errors import ConfigError
from sswe_node.node.metrics import Metrics
from sswe_node.node.records import CaseOutcome, OutputRecord, ReceivedInstance, Target
from sswe_node.node.sender import Sender
from sswe_node.node.store import CaseStore
from sswe_node.node.stow_client import failure_is_permanent
from tests.node_support import node_sections, write_config
from tests.peers import Orthanc

DESTINATION = "web"


def _outputs(tmp_path: Path, count: int) -> list[Path]:
    """``count`` distinct real ultrasound files (new SOP Instance UIDs)."""
    source = dcmread(get_testdata_file("US1_UNCR.dcm"))
    paths = []
    for i in range(count):
        source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = tmp_path / f"out{i}.dcm"
        source.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _queue(store: CaseStore, files: list[Path], url: str) -> dict[str, str]:
    """Record one done case whose outputs are ``files``, queued to the STOW-RS ``url``."""
    case = store.record_received(ReceivedInstance(generate_uid(), "1.2.3", str(files[0])))
    store.claim(1)
    records = []
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        records.append(OutputRecord(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(path)))
    target = Target(DESTINATION, "", "", 0, False, url)
    store.finish(case, CaseOutcome("done"), records, [target])
    return {r.sop_instance_uid: str(p) for r, p in zip(records, files, strict=True)}


@pytest.fixture
def sender_for(tmp_path: Path) -> Iterator[Callable[..., tuple[CaseStore, Sender]]]:
    running: list[tuple[threading.Event, Sender, CaseStore]] = []

    def _make(destination: Destination | None = None, **sending: float) -> tuple:
        store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
        stop = threading.Event()
        settings = SendingSettings(
            **{"initial_backoff_seconds": 0.2, "max_backoff_seconds": 0.5, **sending}
        )
        destinations = [destination] if destination is not None else []
        sender = Sender(
            store, "SSWE_NODE", settings, TlsSettings(), threading.Event(), stop, Metrics(),
            poll_seconds=0.1, destinations=destinations,
        )  # fmt: skip
        running.append((stop, sender, store))
        return store, sender

    yield _make
    for stop, sender, store in running:
        stop.set()
        if sender.is_alive():
            sender.join(timeout=10)
        store.close()


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _settled(store: CaseStore) -> bool:
    return all(s["status"] != "queued" for s in store.list_sends())


def _send_all(sender: Sender, store: CaseStore, files: list[Path], url: str) -> dict[str, str]:
    """Queue ``files`` to ``url`` (:func:`_queue`), start ``sender``, wait until none is queued."""
    uids = _queue(store, files, url)
    sender.start()
    _wait(lambda: _settled(store))
    return uids


def test_outputs_arrive_at_orthanc_by_stow_rs(tmp_path: Path, sender_for) -> None:
    with Orthanc(tmp_path / "orthanc", dicomweb=True) as orthanc:
        store, sender = sender_for(Destination(name=DESTINATION, url=orthanc.dicomweb_url))
        files = _outputs(tmp_path, 3)
        uids = _send_all(sender, store, files, orthanc.dicomweb_url)
        sends = store.list_sends()
        assert {s["status"] for s in sends} == {"sent"}, sends
        assert all(s["attempts"] == 1 for s in sends)
        stored = {i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.instances()}
        assert stored == set(uids)
        # Byte for byte the pixel data that was queued.
        for instance in orthanc.instances():
            uid = instance["MainDicomTags"]["SOPInstanceUID"]
            got = dcmread(io.BytesIO(orthanc.instance_file(instance["ID"])))
            assert got.PixelData == dcmread(uids[uid]).PixelData


class FlakyStow:
    """A real HTTP STOW-RS peer on loopback that answers as scripted, request by request.

    ``script`` holds one action per request (the last repeats): ``"ok"`` stores everything
    (200), ``"503"``/``"500"``/``"415"``/``"401"`` answer that status and store nothing,
    ``"slow"`` waits ``delay`` seconds (past the client's time-out) and stores nothing,
    ``"partial"`` stores the first instance and fails the second with 0xA700 (retry) and
    the others with 0xC000 (for good), answering 202.
    """

    def __init__(
        self,
        script: list[str],
        delay: float = 3.0,
        require: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.script = list(script)
        self.authorizations: list[str] = []
        self.delay = delay
        self.requests = 0
        self.stored: Counter[str] = Counter()
        self.lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = _read_body(self)
                given = self.headers.get("Authorization", "")
                outer.authorizations.append(given)
                if require is not None and given != require:
                    return self._answer(401, {}, b"who are you")
                uids = outer._uids(self.headers["Content-Type"], body)
                with outer.lock:
                    action = outer.script[min(outer.requests, len(outer.script) - 1)]
                    outer.requests += 1
                if action == "slow":
                    time.sleep(outer.delay)
                    return self._answer(503, {})
                if action.isdigit():
                    return self._answer(int(action), {}, b"try later" if action == "503" else b"")
                failed = {}
                if action == "partial":
                    failed = {u: (0xA700 if i == 1 else 0xC000) for i, u in enumerate(uids) if i}
                kept = [u for u in uids if u not in failed]
                with outer.lock:
                    outer.stored.update(kept)
                response = Dataset()
                response.ReferencedSOPSequence = [_ref(u) for u in kept]
                items = []
                for uid, reason in failed.items():
                    item = _ref(uid)
                    item.FailureReason = reason
                    items.append(item)
                if items:
                    response.FailedSOPSequence = items
                self._answer(202 if failed else 200, response.to_json_dict())

            def _answer(self, status: int, body: dict, raw: bytes = b"") -> None:
                data = raw or json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if raw else "application/dicom+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (the time-out case)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _uids(content_type: str, body: bytes) -> list[str]:
        message = email.message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
                                           + body)  # fmt: skip
        uids = []
        for part in message.get_payload():
            ds = dcmread(io.BytesIO(part.get_payload(decode=True)))
            uids.append(str(ds.SOPInstanceUID))
        return uids

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, by Content-Length or chunked (dicomweb-client streams > 1 MB)."""
    if "chunked" not in handler.headers.get("Transfer-Encoding", ""):
        return handler.rfile.read(int(handler.headers["Content-Length"]))
    chunks = []
    while size := int(handler.rfile.readline().strip(), 16):
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline()
    handler.rfile.readline()
    return b"".join(chunks)


def _ref(uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    item.ReferencedSOPInstanceUID = uid
    return item


@pytest.fixture
def flaky() -> Iterator[Callable[..., FlakyStow]]:
    servers: list[FlakyStow] = []

    def _make(script: list[str], delay: float = 3.0, **options: object) -> FlakyStow:
        servers.append(FlakyStow(script, delay, **options))  # type: ignore[arg-type]
        return servers[-1]

    yield _make
    for server in servers:
        server.stop()


def test_503_then_200_retries_and_sends_each_once(tmp_path: Path, sender_for, flaky) -> None:
    peer = flaky(["503", "503", "ok"])
    store, sender = sender_for(Destination(name=DESTINATION, url=peer.url))
    uids = _send_all(sender, store, _outputs(tmp_path, 4), peer.url)
    sends = store.list_sends()
    assert {s["status"] for s in sends} == {"sent"}
    # Retries fall due one by one, so the second and third requests split the outputs.
    assert all(s["attempts"] in (2, 3) for s in sends), sends
    assert peer.stored == Counter(dict.fromkeys(uids, 1))  # every instance once


def test_503_for_good_gives_the_reason_after_max_attempts(
    tmp_path: Path, sender_for, flaky
) -> None:
    peer = flaky(["503"])
    store, sender = sender_for(Destination(name=DESTINATION, url=peer.url), max_attempts=2)
    _send_all(sender, store, _outputs(tmp_path, 2), peer.url)
    sends = store.list_sends()
    assert {s["status"] for s in sends} == {"failed"} and not peer.stored
    assert all(s["attempts"] == 2 for s in sends), sends
    assert all(s["last_error"] == "HTTP 503 Service Unavailable: try later" for s in sends)


def test_time_out_then_200(
    tmp_path: Path, sender_for, flaky, caplog: pytest.LogCaptureFixture
) -> None:
    peer = flaky(["slow", "ok"], delay=3.0)
    destination = Destination(name=DESTINATION, url=peer.url, timeout=1.0)
    store, sender = sender_for(destination)
    uids = _queue(store, _outputs(tmp_path, 2), peer.url)
    sender.start()
    _wait(lambda: store.list_sends()[0]["attempts"] >= 1 or peer.requests >= 2)
    _wait(lambda: _settled(store))
    assert peer.requests >= 2  # the first request timed out
    assert "reason=no-answer-within-1-s-(timed-out)" in caplog.text
    assert {s["status"] for s in store.list_sends()} == {"sent"}
    assert peer.stored == Counter(dict.fromkeys(uids, 1))


def test_permanent_4xx_fails_for_good_and_shows_in_cases(
    tmp_path: Path, sender_for, flaky, capsys: pytest.CaptureFixture
) -> None:
    peer = flaky(["415"])
    store, sender = sender_for(Destination(name=DESTINATION, url=peer.url), max_attempts=5)
    _send_all(sender, store, _outputs(tmp_path, 2), peer.url)
    sends = store.list_sends()
    assert {s["status"] for s in sends} == {"failed"}
    assert all(s["attempts"] == 1 and "HTTP 415" in s["last_error"] for s in sends), sends
    assert peer.requests == 1 and not peer.stored
    # `sswe-node cases` shows the failed sends and why.
    config = write_config(tmp_path / "node.toml", node_sections(tmp_path))
    capsys.readouterr()
    assert main(["cases", "--config", str(config), "--sends", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [s["status"] for s in shown] == ["failed", "failed"]
    assert all("HTTP 415" in s["last_error"] and s["url"] == peer.url for s in shown)
    assert main(["cases", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "FAILED" in table.splitlines()[0].upper()


def test_partial_failure_decides_per_instance(tmp_path: Path, sender_for, flaky) -> None:
    # First request: instance 0 stored, 1 out of resources (retry), 2 cannot understand (for
    # good); the retry of 1 is then stored.
    peer = flaky(["partial", "ok"])
    store, sender = sender_for(Destination(name=DESTINATION, url=peer.url), max_attempts=5)
    files = _outputs(tmp_path, 3)
    uids = list(_send_all(sender, store, files, peer.url))
    by_uid = {s["output_sop_instance_uid"]: s for s in store.list_sends()}
    assert by_uid[uids[0]]["status"] == "sent" and by_uid[uids[0]]["attempts"] == 1
    assert by_uid[uids[1]]["status"] == "sent" and by_uid[uids[1]]["attempts"] == 2
    assert by_uid[uids[2]]["status"] == "failed" and by_uid[uids[2]]["attempts"] == 1
    assert "0xC000" in by_uid[uids[2]]["last_error"]
    assert peer.stored == Counter({uids[0]: 1, uids[1]: 1})


def test_server_down_is_retried_with_a_clear_reason(tmp_path: Path, sender_for) -> None:
    from tests.peers import free_port

    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    store, sender = sender_for(Destination(name=DESTINATION, url=url), max_attempts=2)
    _send_all(sender, store, _outputs(tmp_path, 1), url)
    send = store.list_sends()[0]
    assert send["status"] == "failed" and send["attempts"] == 2
    assert send["last_error"].startswith("connection failed")


def test_failure_reasons() -> None:
    assert failure_is_permanent(0xC000) and failure_is_permanent(0xA900)
    assert failure_is_permanent(0x0122)
    assert not failure_is_permanent(0xA700) and not failure_is_permanent(0x0110)


def test_web_destination_configuration(tmp_path: Path) -> None:
    def load(entry: dict) -> object:
        path = write_config(tmp_path / "c.toml", node_sections(tmp_path), destinations=[entry])
        return load_settings(path)

    settings = load({"url": "https://pacs.example/dicom-web", "token_env": "PACS_TOKEN"})
    destination = settings.destinations[0]
    assert destination.name == "pacs.example" and destination.token_env == "PACS_TOKEN"
    for bad, message in (
        ({"url": "ftp://x/dicom-web"}, r"http\(s\)"),
        ({"url": "http://x/dicom-web", "host": "x"}, "both"),
        ({"url": "http://x/dicom-web", "token_env": "A", "username": "u"}, "not both"),
        ({"url": "http://x/dicom-web", "password_env": "P"}, "username"),
    ):
        with pytest.raises(ConfigError, match=message):
            load(bad)


def test_bearer_token_from_environment_then_from_a_rotated_file(
    tmp_path: Path, sender_for, flaky, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = flaky(["ok"], require="Bearer s3cret")
    monkeypatch.setenv("SSWE_TEST_STOW_TOKEN", "s3cret")
    store, sender = sender_for(
        Destination(name=DESTINATION, url=peer.url, token_env="SSWE_TEST_STOW_TOKEN")
    )
    _send_all(sender, store, _outputs(tmp_path, 1), peer.url)
    assert store.list_sends()[0]["status"] == "sent"
    assert peer.authorizations == ["Bearer s3cret"]


def test_wrong_token_is_retried_and_a_fixed_file_is_read_again(
    tmp_path: Path, sender_for, flaky
) -> None:
    peer = flaky(["ok"], require="Bearer new-token")
    token = tmp_path / "token"
    token.write_text("old-token\n")
    store, sender = sender_for(
        Destination(name=DESTINATION, url=peer.url, token_file=str(token)), max_attempts=20
    )
    _queue(store, _outputs(tmp_path, 1), peer.url)
    sender.start()
    _wait(lambda: store.list_sends()[0]["attempts"] >= 1)
    send = store.list_sends()[0]
    assert send["status"] == "queued" and "HTTP 401" in send["last_error"], send
    token.write_text("new-token\n")  # the operator rotates the token: no restart needed
    _wait(lambda: _settled(store))
    assert store.list_sends()[0]["status"] == "sent"


def test_http_basic_authentication(tmp_path: Path, sender_for, flaky) -> None:
    import base64

    peer = flaky(["ok"], require="Basic " + base64.b64encode(b"sswe:pw").decode())
    (tmp_path / "pw").write_text("pw\n")
    destination = Destination(
        name=DESTINATION, url=peer.url, username="sswe", password_file=str(tmp_path / "pw")
    )
    store, sender = sender_for(destination)
    _send_all(sender, store, _outputs(tmp_path, 2), peer.url)
    assert {s["status"] for s in store.list_sends()} == {"sent"}


def _mutual_tls_peer(
    folder: Path, flaky: Callable[..., FlakyStow]
) -> tuple[FlakyStow, Path, Path, Path]:
    """Start a STOW-RS peer over HTTPS that requires a client certificate (answers "ok").

    Returns the peer, its certificate, and the client's certificate and key (each
    self-signed, made in ``folder``).
    """
    from tests.node_support import make_certificate

    (folder / "server").mkdir()
    (folder / "client").mkdir()
    server_key, server_cert = make_certificate(folder / "server")
    client_key, client_cert = make_certificate(folder / "client")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED  # a client certificate is required
    context.load_verify_locations(client_cert)
    return flaky(["ok"], ssl_context=context), server_cert, client_cert, client_key


def test_client_certificate_over_https(tmp_path: Path, sender_for, flaky) -> None:
    peer, server_cert, _client_cert, _client_key = _mutual_tls_peer(tmp_path, flaky)
    assert peer.url.startswith("https://")
    # Without the client certificate: the TLS handshake fails, retried with the reason.
    store, sender = sender_for(
        Destination(name=DESTINATION, url=peer.url, ca_certificates=str(server_cert)),
        max_attempts=1,
    )
    _send_all(sender, store, _outputs(tmp_path, 1), peer.url)
    send = store.list_sends()[0]
    assert send["status"] == "failed" and "connection failed" in send["last_error"]
    assert "CERTIFICATE_VERIFY_FAILED" not in send["last_error"]  # our CA file is used
    assert not peer.stored


def test_client_certificate_accepted(tmp_path: Path, sender_for, flaky) -> None:
    peer, server_cert, client_cert, client_key = _mutual_tls_peer(tmp_path, flaky)
    destination = Destination(
        name=DESTINATION, url=peer.url, ca_certificates=str(server_cert),
        client_certificate=str(client_cert), client_key=str(client_key),
    )  # fmt: skip
    store, sender = sender_for(destination)
    uids = _send_all(sender, store, _outputs(tmp_path, 2), peer.url)
    assert {s["status"] for s in store.list_sends()} == {"sent"}
    assert peer.stored == Counter(dict.fromkeys(uids, 1))

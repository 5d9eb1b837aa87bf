"""`sswe-node serve` over DICOMweb end to end: a STOW-RS upload to the node (dicomweb-client,
bearer token) is processed and its outputs arrive at Orthanc's DICOMweb plugin by STOW-RS;
refused and partial uploads get the PS3.18 answers."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom import dcmread

from tests.node_support import ServeProcess, node_sections, sswe_node, write_config
from tests.peers import Orthanc, free_port, wait_for_port
from tests.test_node_serve import packaged_model, sim_archive  # noqa: F401 - fixtures

TOKEN = "stow-test-token"
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"


def _multipart(parts: list[bytes], boundary: str = "b0und") -> tuple[bytes, str]:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_stow_in_process_and_stow_out(
    tmp_path: Path,
    packaged_model: tuple[Path, str],  # noqa: F811
    sim_archive: dict[str, Path],  # noqa: F811
) -> None:
    orthanc = Orthanc(tmp_path / "orthanc", dicomweb=True)
    (tmp_path / "token").write_text(TOKEN + "\n")
    http_port = free_port()
    sections = node_sections(
        tmp_path,
        model={"name": packaged_model[1], "models_dir": str(packaged_model[0])},
        processing={"batch_size": 4, "batch_wait_seconds": 0.2},
        http={"enabled": True, "port": http_port, "stow_enabled": True,
              "stow_token_file": str(tmp_path / "token")},
    )  # fmt: skip
    destinations = [{"name": "orthanc-web", "url": orthanc.dicomweb_url, "timeout": 10.0}]
    config = write_config(tmp_path / "node.toml", sections, destinations)
    node = ServeProcess(config, sections["node"]["port"], tmp_path / "serve.log")
    try:
        wait_for_port(http_port)
        base = f"http://127.0.0.1:{http_port}/dicom-web"
        dual = dcmread(sim_archive["dual"])

        # No token, a wrong token: 401, nothing kept.
        anonymous = DICOMwebClient(base)
        anonymous.set_http_retry_params(retry=False)
        with pytest.raises(requests.HTTPError) as refused:
            anonymous.store_instances([dual])
        assert refused.value.response.status_code == 401
        assert "Bearer" in refused.value.response.headers["WWW-Authenticate"]
        wrong = DICOMwebClient(base, headers={"Authorization": "Bearer nope"})
        wrong.set_http_retry_params(retry=False)
        with pytest.raises(requests.HTTPError):
            wrong.store_instances([dual])

        # The upload: listed as stored only once it is kept.
        client = DICOMwebClient(base, headers={"Authorization": f"Bearer {TOKEN}"})
        client.set_http_retry_params(retry=False)
        response = client.store_instances([dual])
        stored = [str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence]
        assert stored == [str(dual.SOPInstanceUID)]
        assert "FailedSOPSequence" not in response
        kept = tmp_path / "storage" / "incoming"
        assert any(kept.rglob("*.dcm"))

        # Its outputs arrive at Orthanc by STOW-RS (Orthanc has no DIMSE peer configured).
        found = orthanc.wait_for_instances(2, timeout=120)
        assert len(found) == 2, node.log()[-3000:]
        classes = set()
        for instance in found:
            ds = dcmread(io.BytesIO(orthanc.instance_file(instance["ID"])))
            classes.add(str(ds.SOPClassUID))
            assert str(ds.StudyInstanceUID) == str(dual.StudyInstanceUID)
        assert PARAMETRIC_MAP in classes

        deadline = time.monotonic() + 60
        while True:
            cases = json.loads(sswe_node("cases", "--config", str(config), "--json").stdout)
            if cases and cases[0]["sends"]["sent"] == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        (case,) = cases
        assert case["calling_ae"] == "STOW-RS" and case["status"] == "done", case
        assert case["sends"] == {"queued": 0, "sent": 2, "failed": 0}
        sends = json.loads(sswe_node("cases", "--config", str(config), "--sends", "--json").stdout)
        assert {s["url"] for s in sends} == {orthanc.dicomweb_url}

        auth = {"Authorization": f"Bearer {TOKEN}"}
        # Not multipart/related application/dicom: 415.
        json_type = {**auth, "Content-Type": "application/dicom+json"}
        plain = requests.post(base + "/studies", data=b"{}", timeout=10, headers=json_type)
        assert plain.status_code == 415
        # One readable instance and one that is not DICOM: 202, one of each list.
        other = sim_archive["bmode"].read_bytes()
        body, content_type = _multipart([other, b"not a DICOM file"])
        partial = requests.post(base + "/studies", data=body, timeout=30,
                                headers={**auth, "Content-Type": content_type})  # fmt: skip
        assert partial.status_code == 202, partial.text
        answer = partial.json()
        assert len(answer["00081199"]["Value"]) == 1  # ReferencedSOPSequence
        (failure,) = answer["00081198"]["Value"]  # FailedSOPSequence
        assert failure["00081197"]["Value"] == [0xC000]  # FailureReason: cannot understand
        # Nothing storable: 409. Another study's instance under /studies/{uid}: refused too.
        body, content_type = _multipart([b"garbage"])
        none = requests.post(base + "/studies", data=body, timeout=10,
                             headers={**auth, "Content-Type": content_type})  # fmt: skip
        assert none.status_code == 409
        body, content_type = _multipart([other])
        mismatch = requests.post(base + "/studies/1.2.3.4", data=body, timeout=10,
                                 headers={**auth, "Content-Type": content_type})  # fmt: skip
        assert mismatch.status_code == 409
        assert mismatch.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC409]
        assert requests.post(base + "/other", data=b"", headers=auth, timeout=10).status_code == 404
        # /health still answers next to STOW-RS.
        assert requests.get(f"http://127.0.0.1:{http_port}/health", timeout=10).ok
    finally:
        assert node.terminate() == 0
        orthanc.stop()


def _route_server(tmp_path: Path, **http: object):
    """The node's HTTP server with the STOW-RS route, in this process (no workers)."""
    import threading

    from sswe_node.config import load_settings
    from sswe_node.node.health import HealthServer
    from sswe_node.node.metrics import Metrics
    from sswe_node.node.store import CaseStore
    from sswe_node.node.stow_server import stow_route
    from sswe_node.node.web_session import server_ssl_context

    node = http.pop("node", {})
    sections = node_sections(tmp_path, http={"enabled": True, "port": 0, "stow_enabled": True,
                                             **http})  # fmt: skip
    sections["node"].update(node)
    settings = load_settings(write_config(tmp_path / "node.toml", sections))
    store = CaseStore(settings.node.database_url)
    route = stow_route(settings, store, threading.Event(), Metrics())
    server = HealthServer("127.0.0.1", 0, lambda: {"status": "ok"}, lambda: "", post=route,
                          ssl_context=server_ssl_context(settings.http))  # fmt: skip
    server.start()
    return server, store


def test_stow_over_https_is_recorded_like_c_store(tmp_path: Path, make_us_source) -> None:
    from tests.node_support import make_certificate

    key, cert = make_certificate(tmp_path)
    server, store = _route_server(
        tmp_path, stow_token="t0k", certificate=str(cert), private_key=str(key)
    )
    try:
        source = make_us_source(rows=64, cols=64, seed=2)
        source.save_as(tmp_path / "us.dcm", enforce_file_format=True)
        client = DICOMwebClient(f"https://127.0.0.1:{server.port}/dicom-web",
                                headers={"Authorization": "Bearer t0k"})  # fmt: skip
        client._session.verify = str(cert)
        client._session.trust_env = False
        client.set_http_retry_params(retry=False)
        response = client.store_instances([dcmread(tmp_path / "us.dcm")])
        assert response.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        (case,) = store.list_cases()
        assert case["calling_ae"] == "STOW-RS" and case["status"] == "received"
        assert case["sop_instance_uid"] == source.SOPInstanceUID
        assert case["study_instance_uid"] == source.StudyInstanceUID
        kept = next((tmp_path / "storage" / "incoming").rglob("*.dcm"))
        assert kept.read_bytes() == (tmp_path / "us.dcm").read_bytes()  # the bytes as sent
        # Plain HTTP to the HTTPS port gets nowhere.
        with pytest.raises(requests.ConnectionError):
            requests.post(f"http://127.0.0.1:{server.port}/dicom-web/studies", timeout=5)
    finally:
        server.stop()
        store.close()


def test_stow_without_space_answers_503_and_keeps_nothing(tmp_path: Path, make_us_source) -> None:
    server, store = _route_server(tmp_path, stow_allow_anonymous=True,
                                  node={"min_free_space_mb": 10**9})  # fmt: skip
    try:
        source = make_us_source(rows=32, cols=32, seed=3)
        buffer = io.BytesIO()
        source.save_as(buffer, enforce_file_format=True)
        body, content_type = _multipart([buffer.getvalue()])
        answer = requests.post(f"http://127.0.0.1:{server.port}/dicom-web/studies", data=body,
                               headers={"Content-Type": content_type}, timeout=10)  # fmt: skip
        assert answer.status_code == 503
        assert answer.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
        assert store.list_cases() == []
    finally:
        server.stop()
        store.close()


def test_stow_needs_a_token_or_an_explicit_anonymous_setting(tmp_path: Path) -> None:
    from sswe_node.config import load_settings
    from sswe_node.errors import ConfigError

    sections = node_sections(tmp_path, http={"enabled": True, "stow_enabled": True})
    with pytest.raises(ConfigError, match="stow_allow_anonymous"):
        load_settings(write_config(tmp_path / "node.toml", sections))


def test_multipart_parts_and_malformed_bodies() -> None:
    from sswe_node.node.stow_server import HttpError, split_multipart

    body = (b"preamble\r\n--X\r\nContent-Type: application/dicom\r\n\r\nA\r\n--X\r\n\r\nB\r\n"
            b"--X\r\n\r\n\r\n--X--\r\nepilogue")  # fmt: skip
    parts = split_multipart(body, b"X")
    assert parts[0] == ({"content-type": "application/dicom"}, b"A")
    assert parts[1] == ({}, b"B")  # no headers: the part starts with its blank line
    assert parts[2] == ({}, b"")  # an empty part
    for bad in (b"--X\r\nContent-Type: a\r\nA\r\n--X--", b"--X\r\n\r\nA", b"no boundary"):
        with pytest.raises(HttpError) as refused:
            split_multipart(bad, b"X")
        assert refused.value.status == 400

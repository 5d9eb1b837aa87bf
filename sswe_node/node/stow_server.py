"""STOW-RS receiving: ``POST /dicom-web/studies[/{StudyInstanceUID}]`` on the node's HTTP server.

Each ``application/dicom`` part of a ``multipart/related`` request is kept exactly as C-STORE
keeps an instance (:func:`sswe_node.node.handlers.keep_instance`: durable file, case record,
workers woken) before it is listed as stored. The response is a PS3.18 Store Instances
response (DICOM JSON): ReferencedSOPSequence for the stored instances, FailedSOPSequence with
a FailureReason for the others; ``200`` all stored, ``202`` some, ``409`` none, ``503`` none
for lack of resources (try again later), ``400`` not a readable multipart body, ``401`` no or
a wrong bearer token, ``403`` a peer address not allowed, ``404`` another path, ``406`` a
response type we cannot give, ``411`` no length, ``413`` too large, ``415`` not
``multipart/related; type="application/dicom"``.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pydicom import Dataset, dcmread

from sswe_node.config import Settings
from sswe_node.node.handlers import keep_instance
from sswe_node.node.records import ReceivedInstance
from sswe_node.node.store import CaseStore
from sswe_node.node.web_session import read_secret

if TYPE_CHECKING:
    from sswe_node.node.metrics import Metrics

LOGGER = logging.getLogger(__name__)

#: The calling AE recorded for instances received by STOW-RS (``sswe-node cases``).
STOW_CALLING_AE = "STOW-RS"
ROOT = "/dicom-web/studies"

# PS3.18 Table 10.5.3-3 failure reasons.
CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xC409  # this study's resource, another study's instance (as dcm4chee)
OUT_OF_RESOURCES = 0xA700

_DRAIN_LIMIT = 8 * 1024 * 1024


@dataclass
class Reply:
    """An HTTP response."""

    status: int
    body: bytes = b""
    content_type: str = "application/dicom+json"
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    """A request refused as a whole."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class StowRoute:
    """The STOW-RS service of the node, called by the HTTP server for each ``POST``.

    Parameters
    ----------
    settings : Settings
        ``http.stow_*`` (access), ``node.storage_dir``, ``node.min_free_space_mb``,
        ``node.allowed_peer_addresses``, ``node.ae_title``.
    store : CaseStore
        The case store.
    wake : threading.Event
        Set when instances were kept (wakes the workers).
    metrics : Metrics
        Counters to update.
    """

    def __init__(
        self, settings: Settings, store: CaseStore, wake: threading.Event, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.store = store
        self.wake = wake
        self.metrics = metrics

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one ``POST`` request on ``handler`` (an http.server request handler)."""
        peer = str(handler.client_address[0])
        try:
            reply = self.handle(handler.path, handler.headers, handler.rfile, peer)
        except HttpError as exc:
            LOGGER.warning("event=stow-refused status=%d reason=%s peer=%s",
                           exc.status, str(exc).replace(" ", "-"), peer)  # fmt: skip
            if exc.status in (401, 403, 404, 406, 411, 413, 415):
                _drain(handler)  # so the client reads our answer instead of a reset
            reply = Reply(exc.status, json.dumps({"error": str(exc)}).encode(),
                          "application/json", exc.headers)  # fmt: skip
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(reply.body)

    def handle(self, path: str, headers: Message, body: BinaryIO, peer: str) -> Reply:
        """Check, read, keep and answer one STOW-RS request.

        Raises
        ------
        HttpError
            When the request is refused as a whole (status and reason).
        """
        study_uid = _study_of(path)
        self._check_access(headers, peer)
        accept = headers.get("Accept", "")
        if accept and not any(
            t in accept for t in ("application/dicom+json", "application/json", "*/*")
        ):
            raise HttpError(406, "responses are application/dicom+json only")
        boundary = _boundary(headers.get("Content-Type", ""))
        data = _read_body(headers, body, self.settings.http.stow_max_request_mb * 1024 * 1024)
        parts = split_multipart(data, boundary)
        if not parts:
            raise HttpError(400, "no instance in the request")
        for part_headers, _ in parts:
            part_type = _media_type(part_headers.get("content-type", "application/dicom"))
            if part_type != "application/dicom":
                raise HttpError(415, f"part of type {part_type!r}: only application/dicom")
        referenced, failed = [], []
        for _, content in parts:
            sop_class, sop_uid, failure = self._keep(content, study_uid, peer)
            (failed if failure else referenced).append((sop_class, sop_uid, failure))
        LOGGER.info("event=stow-request stored=%d failed=%d peer=%s",
                    len(referenced), len(failed), peer)  # fmt: skip
        return Reply(*_status_and_body(referenced, failed))

    def _check_access(self, headers: Message, peer: str) -> None:
        allowed = self.settings.node.allowed_peer_addresses
        if allowed and peer not in allowed:
            raise HttpError(403, "peer address not allowed")
        http = self.settings.http
        token = http.stow_token or (read_secret(http.stow_token_file, "STOW-RS token")
                                    if http.stow_token_file else "")  # fmt: skip
        if not token:
            if http.stow_allow_anonymous:
                return
            raise HttpError(401, "no STOW-RS token configured")
        given = headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise HttpError(
                401, "missing or wrong bearer token",
                {"WWW-Authenticate": 'Bearer realm="sswe-node STOW-RS"'},
            )  # fmt: skip

    def _keep(self, content: bytes, study_uid: str | None, peer: str) -> tuple[str, str, int]:
        """Keep one part; return its SOP class and instance UIDs and a failure reason (0: kept)."""
        start = time.perf_counter()
        try:
            ds = dcmread(io.BytesIO(content), stop_before_pixels=True)  # Part 10 only
            meta = ds.file_meta
            syntax = str(meta.TransferSyntaxUID)
        except Exception:  # noqa: BLE001 - not a DICOM file: that part fails
            return "", "", CANNOT_UNDERSTAND
        sop_class = str(ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
        sop_uid = str(ds.get("SOPInstanceUID", "") or meta.get("MediaStorageSOPInstanceUID", ""))
        if study_uid is not None and str(ds.get("StudyInstanceUID", "")) != study_uid:
            return sop_class, sop_uid, STUDY_MISMATCH
        info = ReceivedInstance(
            sop_instance_uid=sop_uid.strip("\0 "),
            sop_class_uid=sop_class.strip("\0 "),
            path="",
            transfer_syntax=syntax,
            calling_ae=STOW_CALLING_AE,
            peer_address=peer,
            called_ae=self.settings.node.ae_title,
        )
        node = self.settings.node
        status, _case = keep_instance(
            lambda: content, info, Path(node.storage_dir), self.store, node.min_free_space_mb,
            self.wake, self.metrics, start,
        )  # fmt: skip
        return sop_class, sop_uid, int(status)


def _status_and_body(
    referenced: list[tuple[str, str, int]], failed: list[tuple[str, str, int]]
) -> tuple[int, bytes]:
    response = Dataset()
    if referenced:
        response.ReferencedSOPSequence = [_item(c, u) for c, u, _ in referenced]
    if failed:
        items = []
        for sop_class, sop_uid, reason in failed:
            item = _item(sop_class, sop_uid)
            item.FailureReason = reason
            items.append(item)
        response.FailedSOPSequence = items
    if not failed:
        status = 200
    elif referenced:
        status = 202
    elif all(0xA700 <= reason <= 0xA7FF for _, _, reason in failed):
        status = 503  # nothing kept for lack of resources: the client should try again
    else:
        status = 409
    return status, json.dumps(response.to_json_dict()).encode()


def _item(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def _study_of(path: str) -> str | None:
    """Return the study UID of ``/dicom-web/studies/{uid}`` (``None`` for the root)."""
    clean = path.split("?", 1)[0].rstrip("/")
    if clean == ROOT:
        return None
    prefix = ROOT + "/"
    if clean.startswith(prefix) and "/" not in clean[len(prefix) :] and clean[len(prefix) :]:
        return clean[len(prefix) :]
    raise HttpError(404, "not a STOW-RS resource (POST /dicom-web/studies)")


def _media_type(value: str) -> str:
    message = Message()
    message["Content-Type"] = value
    return message.get_content_type()


def _boundary(content_type: str) -> bytes:
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/related":
        raise HttpError(415, 'only multipart/related; type="application/dicom"')
    kind = str(message.get_param("type") or "application/dicom").lower()
    if kind != "application/dicom":
        raise HttpError(415, f"multipart/related of type {kind!r}: only application/dicom")
    boundary = message.get_param("boundary")
    if not boundary:
        raise HttpError(400, "multipart/related without a boundary")
    return str(boundary).encode("latin-1")


def _read_body(headers: Message, body: BinaryIO, limit: int) -> bytes:
    """Read the request body (``Content-Length`` or chunked), refusing more than ``limit``."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return _read_chunked(body, limit)
    length = headers.get("Content-Length")
    if length is None:
        raise HttpError(411, "Content-Length or chunked transfer encoding needed")
    try:
        size = int(length)
    except ValueError:
        raise HttpError(400, "bad Content-Length") from None
    if size > limit:
        raise HttpError(413, f"request larger than http.stow_max_request_mb ({size} bytes)")
    data = body.read(size)
    if len(data) != size:
        raise HttpError(400, "request body ended early")
    return data


def _read_chunked(body: BinaryIO, limit: int) -> bytes:
    chunks, total = [], 0
    while True:
        line = body.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(400, "bad chunked transfer encoding") from None
        if size == 0:
            while body.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        total += size
        if total > limit:
            raise HttpError(413, "request larger than http.stow_max_request_mb")
        chunk = body.read(size)
        if len(chunk) != size:
            raise HttpError(400, "request body ended early")
        chunks.append(chunk)
        body.readline(8)  # the CRLF after the chunk


def split_multipart(data: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/related`` body into ``(headers, content)`` parts (RFC 2046).

    Header names are lower case. Raises :class:`HttpError` (400) when the body is malformed.
    """
    delimiter = b"--" + boundary
    position = data.find(delimiter)
    if position < 0:
        raise HttpError(400, "multipart boundary not found")
    position += len(delimiter)
    parts = []
    while data[position : position + 2] != b"--":
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            raise HttpError(400, "multipart body ended early")
        start = line_end + 2
        end = data.find(b"\r\n" + delimiter, start - 2)
        if end < 0:
            raise HttpError(400, "multipart body without its closing boundary")
        # Positions first, one copy of the content only (the body may be hundreds of MB).
        headers: dict[str, str] = {}
        if data.startswith(b"\r\n", start):
            content_start = start + 2
        else:
            blank = data.find(b"\r\n\r\n", start, end)
            if blank < 0:
                raise HttpError(400, "multipart part without a blank line after its headers")
            for raw in data[start:blank].split(b"\r\n"):
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            content_start = blank + 4
        parts.append((headers, data[content_start:end] if end > content_start else b""))
        position = end + 2 + len(delimiter)
    return parts


def _drain(handler: BaseHTTPRequestHandler) -> None:
    """Read (and drop) a small request body, so the answer is not lost in a TCP reset."""
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        return
    if 0 < length <= _DRAIN_LIMIT:
        handler.rfile.read(length)
    handler.close_connection = True


def stow_route(
    settings: Settings, store: CaseStore, wake: threading.Event, metrics: Metrics
) -> Callable[[BaseHTTPRequestHandler], None] | None:
    """Return the STOW-RS route when ``http.stow_enabled``, else ``None``."""
    return StowRoute(settings, store, wake, metrics) if settings.http.stow_enabled else None

"""HTTP sessions for DICOMweb peers: bearer token, HTTP basic, client certificate, CA file."""

from __future__ import annotations

import os
import ssl
import urllib.request
from pathlib import Path

import requests

from sswe_node.config import WebAuthSettings
from sswe_node.errors import ConfigError


class WebAuth(WebAuthSettings):
    """How to authenticate to a DICOMweb server (secrets are read when a session is made).

    The attributes are those of :class:`sswe_node.config.WebAuthSettings` (bearer token,
    HTTP basic, client certificate, CA bundle, verification).
    """

    @classmethod
    def of(cls, settings: object) -> WebAuth:
        """Return the authentication named by an object with these attribute names.

        Used with :class:`sswe_node.config.Destination` and the dataset command's options.
        """
        names = cls.__dataclass_fields__
        return cls(**{n: getattr(settings, n) for n in names if hasattr(settings, n)})

    def token(self) -> str:
        """Return the bearer token, or ``""`` when none is configured.

        Raises
        ------
        ConfigError
            When the variable is unset or the file cannot be read or is empty.
        """
        return _configured_secret(self.token_env, self.token_file, "bearer token", strip=True)

    def password(self) -> str:
        """Return the HTTP basic password (``""`` when none is configured)."""
        return _configured_secret(self.password_env, self.password_file, "password", strip=False)


def _configured_secret(env: str, path: str, what: str, *, strip: bool) -> str:
    """Return a secret from the environment variable ``env`` or the file ``path`` (else "").

    Raises
    ------
    ConfigError
        When the variable is unset (or blank, with ``strip``), or the file cannot be read or
        is empty.
    """
    if env:
        value = os.environ.get(env, "")
        if strip:
            value = value.strip()
        if not value:
            raise ConfigError(f"environment variable {env} ({what}) is unset")
        return value
    if path:
        return read_secret(path, what)
    return ""


def make_session(auth: WebAuth) -> requests.Session:
    """Return a :class:`requests.Session` that authenticates as ``auth`` says.

    Raises
    ------
    ConfigError
        When a configured secret cannot be read.
    """
    session = requests.Session()
    apply_auth(session, auth)
    return session


def apply_auth(session: requests.Session, auth: WebAuth) -> None:
    """Set (again) the credentials of ``session``: secrets are re-read, so rotation works."""
    token = auth.token()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif auth.username:
        session.auth = (auth.username, auth.password())
    if auth.client_certificate:
        session.cert = (
            (auth.client_certificate, auth.client_key)
            if auth.client_key
            else auth.client_certificate
        )
    if not auth.verify or auth.ca_certificates:
        session.verify = False if not auth.verify else auth.ca_certificates
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own CA bundle
        # (psf/requests#3829): take nothing from the environment but its proxies.
        session.trust_env = False
        proxies = urllib.request.getproxies()
        if "no" in proxies:
            proxies["no_proxy"] = proxies.pop("no")
        session.proxies.update(proxies)


def read_secret(path: str, what: str) -> str:
    """Return the stripped content of a secret file (:class:`ConfigError` when unusable)."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from None
    if not value:
        raise ConfigError(f"the {what} file {path} is empty")
    return value


def server_ssl_context(http: object) -> ssl.SSLContext | None:
    """Return the HTTPS context of the node's HTTP server (``None``: plain HTTP).

    ``http`` has ``certificate`` and ``private_key`` (PEM paths, both empty for plain HTTP).
    """
    certificate = getattr(http, "certificate", "")
    if not certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, getattr(http, "private_key", "") or None)
    return context


def describe_request_error(exc: BaseException, limit: int = 200) -> str:
    """Return a short reason for a failed HTTP request (the cause, not urllib3's wrapping).

    ``HTTP 401 Unauthorized`` for an error answer; for a refused or broken connection the
    innermost cause, e.g. ``[Errno 111] Connection refused``.
    """
    response = getattr(exc, "response", None)
    if response is not None:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    if isinstance(exc, requests.Timeout):
        return "timed out"
    cause: object = exc
    for _ in range(4):  # requests -> urllib3 MaxRetryError -> NewConnectionError / SSLError
        args = getattr(cause, "args", None)
        inner = getattr(cause, "reason", None) or (args[0] if args else None)
        if inner is None or inner is cause or isinstance(inner, str):
            break
        cause = inner
    text = " ".join(str(cause).split())
    if "): " in text:  # "HTTPConnection(host=..., port=...): Failed to ...: [Errno 111] ..."
        text = text.split("): ", 1)[1]
    return text[:limit]

"""Typed node settings: TOML file, then environment variables, then command-line flags.

The defaults live in ``config/node.toml``. Any single value may be overridden from the
environment with ``SSWE_NODE__<SECTION>__<KEY>`` (upper case, double underscores), e.g.
``SSWE_NODE__NODE__PORT=11113`` or ``SSWE_NODE__MODEL__NAME=thyroid-sim``. The value is parsed
as a TOML value when it parses (numbers, booleans, ``["A", "B"]`` lists) and taken as a
string otherwise. ``SSWE_NODE_CONFIG`` names the configuration file to use.

A wrong key or a bad value fails at start-up with one :class:`~sswe_node.errors.ConfigError`
line naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sswe_node.aetitle import check_ae_title
from sswe_node.errors import ConfigError
from sswe_node.shipped import shipped_path

#: ``config/node.toml`` of the checkout, or the copy an installed wheel carries.
DEFAULT_CONFIG_PATH = shipped_path("config/node.toml")
ENV_PREFIX = "SSWE_NODE__"
ENV_CONFIG_FILE = "SSWE_NODE_CONFIG"


@dataclass
class NodeSettings:
    """The DICOM storage SCP: identity, network and storage."""

    ae_title: str = "SSWE_NODE"
    host: str = "0.0.0.0"
    port: int = 11112
    storage_dir: str = "var/storage"
    database_url: str = "sqlite:///var/sswe-node.db"
    allowed_calling_ae_titles: list[str] = field(default_factory=list)
    allowed_peer_addresses: list[str] = field(default_factory=list)
    max_associations: int = 10
    max_pdu_size: int = 0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    min_free_space_mb: int = 500
    max_image_pixels: int = 50_000_000
    send_back_to_caller: bool = False
    caller_port: int = 104
    association_request_timeout: float = 5.0
    shutdown_timeout: float = 20.0
    max_instance_mb: float = 512.0


@dataclass
class TlsSettings:
    """Optional DICOM TLS for the SCP (and for sending when the destination asks for it)."""

    enabled: bool = False
    certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    require_client_certificate: bool = False


@dataclass
class ModelSettings:
    """Which packaged model to run, and where packaged models live.

    ``name`` is the default model; ``[[routing]]`` rules may choose others per instance.
    ``unmatched`` is what an instance that no rule matches gets: ``"default"`` (this model)
    or ``"skip"`` (the case is skipped, reason ``no-model-for-instance``).
    """

    name: str = "prostate-sim"
    models_dir: str = "models"
    device: str = "auto"
    unmatched: str = "default"


@dataclass
class TrustSettings:
    """Uncertainty, the out-of-distribution gate and scanner alignment (issue 12).

    ``mc_passes``: MC dropout passes (0: the model manifest's, 8 by default; 1: none, no
    uncertainty frame). ``sd_threshold``: standard deviation, in the model's unit, above which
    the capture withholds colour (0: the manifest's). ``ood_percentile``: a frame whose score
    exceeds this percentile of the training frames' is out of distribution (100 switches the
    gate off). ``align_scanners``: align other scanners' latent features to the training
    scanners' (a model's manifest can switch it off too) once ``align_min_frames`` frames of
    that scanner have been seen. ``mc_precision``: arithmetic of the MC passes, ``"auto"``
    (bfloat16 on a GPU or a CPU with bfloat16 units, else float32), ``"float32"`` or
    ``"bfloat16"``.
    """

    mc_passes: int = 0
    mc_precision: str = "auto"
    sd_threshold: float = 0.0
    ood_percentile: float = 99.0
    align_scanners: bool = True
    align_min_frames: int = 16


@dataclass
class RoutingRule:
    """A ``[[routing]]`` rule: instances matching every given condition go to ``model``.

    Conditions (a string or a list of strings, compared without regard to case; empty:
    any): ``called_ae``, ``calling_ae``, ``body_part`` (Body Part Examined) and
    ``manufacturer``. The first matching rule wins.
    """

    model: str = ""
    called_ae: str | list[str] = ""
    calling_ae: str | list[str] = ""
    body_part: str | list[str] = ""
    manufacturer: str | list[str] = ""


@dataclass
class ReadingSettings:
    """How captures are read when the image itself does not say everything."""

    colour_bar_max: float = 0.0
    colour_bar_min: float = 0.0
    max_frames: int = 16


@dataclass
class ProcessingSettings:
    """Workers that turn received instances into derived DICOM."""

    workers: int = 1
    batch_size: int = 16
    batch_wait_seconds: float = 0.2
    batch_max_mb: float = 256.0
    parametric_map: bool = True
    secondary_capture: bool = True
    paused: bool = False
    send_out_of_distribution: bool = True
    processes: bool = True
    lease_seconds: float = 30.0
    poll_seconds: float = 1.0


@dataclass
class SendingSettings:
    """The persistent send queue: retries with exponential backoff."""

    max_attempts: int = 10
    initial_backoff_seconds: float = 5.0
    max_backoff_seconds: float = 600.0
    backoff_jitter: float = 0.25
    lease_seconds: float = 300.0
    stow_batch_size: int = 20


@dataclass
class HttpSettings:
    """The small HTTP endpoint: ``/health``, Prometheus ``/metrics`` and optionally STOW-RS.

    ``stow_enabled`` adds ``POST /dicom-web/studies`` (STOW-RS); a request must carry
    ``Authorization: Bearer <token>`` with ``stow_token`` or the content of ``stow_token_file``
    unless ``stow_allow_anonymous``. ``certificate`` and ``private_key`` (PEM) serve HTTPS.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    stow_enabled: bool = False
    stow_token: str = ""
    stow_token_file: str = ""
    stow_allow_anonymous: bool = False
    stow_max_request_mb: int = 512
    certificate: str = ""
    private_key: str = ""


@dataclass
class LoggingSettings:
    """Log level and format."""

    level: str = "INFO"


@dataclass(unsafe_hash=True)
class WebAuthSettings:
    """How to authenticate to a DICOMweb server (the keys; the secrets are read when used).

    Attributes
    ----------
    token_env, token_file : str
        An environment variable, or a file, holding a bearer token (``Authorization: Bearer``).
    username : str
        HTTP basic user name; the password from ``password_env`` or ``password_file``.
    password_env, password_file : str
        Where the HTTP basic password is.
    client_certificate, client_key : str
        A client certificate (PEM) and its key (PEM; empty when inside the certificate file).
    ca_certificates : str
        CA bundle (PEM) that verifies the server; empty: the system's.
    verify : bool
        ``False`` accepts any server certificate (tests only).
    """

    token_env: str = ""
    token_file: str = ""
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    client_certificate: str = ""
    client_key: str = ""
    ca_certificates: str = ""
    verify: bool = True


@dataclass
class Destination(WebAuthSettings):
    """A peer that receives the derived instances: C-STORE, or STOW-RS when ``url`` is set.

    A STOW-RS destination (``url = "https://host/dicom-web"``, the DICOMweb base URL) may
    authenticate with a bearer token (``token_env``: an environment variable holding it, or
    ``token_file``), HTTP basic (``username`` with ``password_env`` or ``password_file``), and/or
    a client certificate (``client_certificate``, ``client_key``, PEM). ``ca_certificates``
    verifies the server (default: the system's); ``verify = false`` does not (tests only).
    The authentication keys are those of :class:`WebAuthSettings`.
    """

    name: str = ""
    ae_title: str = ""
    host: str = ""
    port: int = 104
    tls: bool = False
    url: str = ""
    timeout: float = 30.0


@dataclass
class Caller:
    """Where a calling AE listens, for sending outputs back to it (``node.send_back_to_caller``)."""

    ae_title: str = ""
    host: str = ""
    port: int = 104
    tls: bool = False


@dataclass
class Settings:
    """All node settings."""

    node: NodeSettings = field(default_factory=NodeSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    reading: ReadingSettings = field(default_factory=ReadingSettings)
    processing: ProcessingSettings = field(default_factory=ProcessingSettings)
    sending: SendingSettings = field(default_factory=SendingSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    destinations: list[Destination] = field(default_factory=list)
    callers: list[Caller] = field(default_factory=list)
    routing: list[RoutingRule] = field(default_factory=list)
    source: str = "<defaults>"


_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load, merge and validate the node settings.

    Parameters
    ----------
    path : path-like, optional
        The TOML file. Defaults to ``$SSWE_NODE_CONFIG`` or the shipped ``config/node.toml``.
    environ : mapping, optional
        Environment to read ``SSWE_NODE__SECTION__KEY`` overrides from (default ``os.environ``).
    overrides : mapping, optional
        Dotted keys (``"node.port"``) to values, e.g. from command-line flags; applied last.

    Returns
    -------
    Settings
        Validated settings.

    Raises
    ------
    ConfigError
        On an unreadable file, an unknown key or a bad value; the message names both.
    """
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(ENV_CONFIG_FILE) or DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None

    origins: dict[str, str] = {}
    for name, text in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
            _set_dotted(raw, keys, _parse_env_value(text), f"environment variable {name}")
            origins[".".join(keys)] = f"environment variable {name} (over {path})"
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, dotted.split("."), value, f"override {dotted}")
            origins[dotted] = f"command-line option for {dotted} (over {path})"

    try:
        settings = _build(Settings, raw, prefix="", source=str(path))
        _check(settings, str(path))
    except ConfigError as exc:
        raise _blame_override(exc, str(path), origins) from None
    settings.source = str(path)
    return settings


def _blame_override(exc: ConfigError, source: str, origins: Mapping[str, str]) -> ConfigError:
    """Name the environment variable or flag, not the file, when an override is the bad value."""
    message = str(exc)
    for dotted, origin in origins.items():
        if f"'{dotted}'" in message and message.startswith(f"{source}:"):
            return ConfigError(origin + message[len(source) :])
    return exc


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(raw: dict[str, Any], keys: list[str], value: Any, origin: str) -> None:
    target = raw
    for key in keys[:-1]:
        nxt = target.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: '{key}' is not a section")
        target = nxt
    target[keys[-1]] = value


def _build(cls: type, data: Mapping[str, Any], *, prefix: str, source: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.')}' must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (known: {known})")
    values = {}
    for key, value in data.items():
        values[key] = _coerce(hints[key], value, f"{prefix}{key}", source)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.", source=source)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        return [_coerce(item_hint, item, f"{key}[{i}]", source) for i, item in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    return value


def _check_ae_title(title: str, key: str, source: str) -> None:
    try:
        check_ae_title(title)  # the one AE title rule (sswe_node.aetitle)
    except ConfigError:
        raise ConfigError(
            f"{source}: '{key}' must be 1-16 printable characters without backslash, got {title!r}"
        ) from None


def _check(settings: Settings, source: str) -> None:
    node = settings.node
    _check_ae_title(node.ae_title, "node.ae_title", source)
    for i, title in enumerate(node.allowed_calling_ae_titles):
        _check_ae_title(title, f"node.allowed_calling_ae_titles[{i}]", source)
    for key, port in (("node.port", node.port), ("http.port", settings.http.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{source}: '{key}' must be a port number 0-65535, got {port}")
    positives = {
        "node.max_associations": node.max_associations,
        "processing.workers": settings.processing.workers,
        "processing.batch_size": settings.processing.batch_size,
        "sending.max_attempts": settings.sending.max_attempts,
        "sending.stow_batch_size": settings.sending.stow_batch_size,
        "reading.max_frames": settings.reading.max_frames,
    }
    for key, value in positives.items():
        if value < 1:
            raise ConfigError(f"{source}: '{key}' must be at least 1, got {value}")
    for key, value in (
        ("node.association_request_timeout", node.association_request_timeout),
        ("node.shutdown_timeout", node.shutdown_timeout),
        ("sending.lease_seconds", settings.sending.lease_seconds),
    ):
        if value <= 0:
            raise ConfigError(f"{source}: '{key}' must be more than 0, got {value}")
    if not 0 <= settings.sending.backoff_jitter <= 1:
        raise ConfigError(
            f"{source}: 'sending.backoff_jitter' must be 0-1, got {settings.sending.backoff_jitter}"
        )
    for key, value in (
        ("node.max_instance_mb", node.max_instance_mb),
        ("processing.batch_max_mb", settings.processing.batch_max_mb),
        ("node.max_pdu_size", node.max_pdu_size),
        ("node.min_free_space_mb", node.min_free_space_mb),
        ("sending.initial_backoff_seconds", settings.sending.initial_backoff_seconds),
        ("processing.poll_seconds", settings.processing.poll_seconds),
    ):
        if value < 0:
            raise ConfigError(f"{source}: '{key}' must not be negative, got {value}")
    if settings.processing.lease_seconds < 1:
        raise ConfigError(
            f"{source}: 'processing.lease_seconds' must be at least 1, "
            f"got {settings.processing.lease_seconds}"
        )
    if settings.logging.level.upper() not in _LOG_LEVELS:
        raise ConfigError(
            f"{source}: 'logging.level' must be one of {sorted(_LOG_LEVELS)}, "
            f"got {settings.logging.level!r}"
        )
    if settings.tls.enabled and not (settings.tls.certificate and settings.tls.private_key):
        raise ConfigError(f"{source}: 'tls.enabled' needs 'tls.certificate' and 'tls.private_key'")
    if settings.model.device not in {"auto", "cpu", "gpu"}:
        raise ConfigError(f"{source}: 'model.device' must be auto, cpu or gpu")
    _check_trust(settings, source)
    _check_stow_server(settings.http, source)
    names = set()
    for i, dest in enumerate(settings.destinations):
        if dest.url:
            _check_web_destination(dest, f"destinations[{i}]", source)
            if dest.name in names:
                raise ConfigError(f"{source}: 'destinations[{i}].name' {dest.name!r} is repeated")
            names.add(dest.name)
            continue
        _check_ae_title(dest.ae_title, f"destinations[{i}].ae_title", source)
        if not dest.host:
            raise ConfigError(f"{source}: 'destinations[{i}].host' must not be empty")
        if not 1 <= dest.port <= 65535:
            raise ConfigError(f"{source}: 'destinations[{i}].port' must be 1-65535")
        dest.name = dest.name or dest.ae_title
        if dest.name in names:
            raise ConfigError(f"{source}: 'destinations[{i}].name' {dest.name!r} is repeated")
        names.add(dest.name)
    callers = set()
    for i, caller in enumerate(settings.callers):
        _check_ae_title(caller.ae_title, f"callers[{i}].ae_title", source)
        if not 1 <= caller.port <= 65535:
            raise ConfigError(f"{source}: 'callers[{i}].port' must be 1-65535")
        if caller.ae_title in callers:
            raise ConfigError(f"{source}: 'callers[{i}].ae_title' {caller.ae_title!r} is repeated")
        callers.add(caller.ae_title)
    if not 0 <= node.caller_port <= 65535:
        raise ConfigError(f"{source}: 'node.caller_port' must be a port number 0-65535")


def _check_stow_server(http: HttpSettings, source: str) -> None:
    if http.stow_enabled and not http.enabled:
        raise ConfigError(f"{source}: 'http.stow_enabled' needs 'http.enabled = true'")
    if http.stow_token and http.stow_token_file:
        raise ConfigError(f"{source}: give 'http.stow_token' or 'http.stow_token_file', not both")
    if http.stow_enabled and not (
        http.stow_token or http.stow_token_file or http.stow_allow_anonymous
    ):
        raise ConfigError(
            f"{source}: 'http.stow_enabled' needs 'http.stow_token' or 'http.stow_token_file' "
            "(or 'http.stow_allow_anonymous = true' to accept writes from anyone)"
        )
    if http.stow_max_request_mb < 1:
        raise ConfigError(f"{source}: 'http.stow_max_request_mb' must be at least 1")
    if bool(http.certificate) != bool(http.private_key):
        raise ConfigError(f"{source}: 'http.certificate' and 'http.private_key' go together")


def _check_web_destination(dest: Destination, key: str, source: str) -> None:
    """Check a STOW-RS destination (``url`` set) and give it a name."""
    parts = urlsplit(dest.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{source}: '{key}.url' must be an http(s) DICOMweb base URL, got {dest.url!r}"
        )
    if dest.host:
        raise ConfigError(f"{source}: '{key}' has both 'url' (STOW-RS) and 'host' (C-STORE)")
    if dest.token_env and dest.token_file:
        raise ConfigError(f"{source}: '{key}': give 'token_env' or 'token_file', not both")
    if dest.password_env and dest.password_file:
        raise ConfigError(f"{source}: '{key}': give 'password_env' or 'password_file', not both")
    if (dest.token_env or dest.token_file) and dest.username:
        raise ConfigError(f"{source}: '{key}': a bearer token or HTTP basic, not both")
    if bool(dest.password_env or dest.password_file) and not dest.username:
        raise ConfigError(f"{source}: '{key}': a password needs 'username'")
    if dest.client_key and not dest.client_certificate:
        raise ConfigError(f"{source}: '{key}.client_key' needs 'client_certificate'")
    if dest.timeout <= 0:
        raise ConfigError(f"{source}: '{key}.timeout' must be positive, got {dest.timeout}")
    dest.name = dest.name or dest.ae_title or parts.hostname


def _check_trust(settings: Settings, source: str) -> None:
    """Check ``[model]`` routing choices, ``[trust]`` and the ``[[routing]]`` rules."""
    if settings.model.unmatched not in {"default", "skip"}:
        raise ConfigError(f"{source}: 'model.unmatched' must be default or skip")
    trust = settings.trust
    if trust.mc_passes < 0 or trust.sd_threshold < 0 or trust.align_min_frames < 1:
        raise ConfigError(
            f"{source}: 'trust.mc_passes' and 'trust.sd_threshold' must not be negative, "
            "'trust.align_min_frames' at least 1"
        )
    if trust.mc_precision not in {"auto", "float32", "bfloat16"}:
        raise ConfigError(f"{source}: 'trust.mc_precision' must be auto, float32 or bfloat16")
    if not 0 <= trust.ood_percentile <= 100:
        raise ConfigError(f"{source}: 'trust.ood_percentile' must be 0-100")
    conditions = ("called_ae", "calling_ae", "body_part", "manufacturer")
    for i, rule in enumerate(settings.routing):
        if not rule.model:
            raise ConfigError(f"{source}: 'routing[{i}].model' must name a model")
        for key in conditions:
            value = getattr(rule, key)
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{source}: 'routing[{i}].{key}' must be a string or a list")
            setattr(rule, key, [v.strip() for v in values if v.strip()])
        for j, title in enumerate(rule.called_ae):
            _check_ae_title(title, f"routing[{i}].called_ae[{j}]", source)

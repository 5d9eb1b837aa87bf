"""Keyed-hash pseudonyms for patient identifiers (HMAC-SHA256); raw IDs are never stored."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sswe_node.errors import ConfigError

logger = logging.getLogger(__name__)

#: Environment variable holding the pseudonymisation key (text; hex or any string).
KEY_ENV = "SSWE_DATASET_KEY"
#: Suffix of the key file generated next to a dataset file when no key is given.
KEY_SUFFIX = ".key"


@dataclass(frozen=True)
class PseudonymKey:
    """A secret key for patient pseudonyms.

    Attributes
    ----------
    secret : bytes
        The key material.
    origin : str
        Where it came from (``"file:PATH"``, ``"env:SSWE_DATASET_KEY"`` or ``"generated:PATH"``).
    """

    secret: bytes
    origin: str

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible fingerprint, safe to store to check key consistency."""
        return hashlib.sha256(b"sswe-key-fingerprint:" + self.secret).hexdigest()[:16]

    def patient_key(self, patient_id: str, fallback: str = "") -> str:
        """Return the pseudonym of a patient identifier.

        Parameters
        ----------
        patient_id : str
            The raw Patient ID (0010,0020); surrounding blanks are ignored.
        fallback : str, optional
            Used instead when the Patient ID is empty (e.g. the Study Instance UID), so that
            anonymous studies are not all lumped into one patient.

        Returns
        -------
        str
            64 lower-case hexadecimal characters (HMAC-SHA256).
        """
        text = str(patient_id or "").strip()
        material = f"pid:{text}" if text else f"anon:{fallback}"
        return hmac.new(self.secret, material.encode("utf-8"), hashlib.sha256).hexdigest()


def load_key(key_file: str | Path | None, dataset_path: str | Path) -> PseudonymKey:
    """Find the pseudonymisation key, generating one next to the dataset when none is given.

    The order is: ``key_file``; the ``SSWE_DATASET_KEY`` environment variable; an existing
    ``<dataset>.key`` file; a new random key written to ``<dataset>.key`` (mode 0600).

    Parameters
    ----------
    key_file : path-like, optional
        A file whose stripped content is the key.
    dataset_path : path-like
        The dataset file the key belongs to.

    Returns
    -------
    PseudonymKey

    Raises
    ------
    ConfigError
        When the key file cannot be read or is empty.
    """
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the pseudonymisation key: {exc}") from None
        if not text:
            raise ConfigError(f"{path}: the pseudonymisation key file is empty")
        return PseudonymKey(text.encode("utf-8"), f"file:{path}")
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return PseudonymKey(env.encode("utf-8"), f"env:{KEY_ENV}")
    generated = Path(str(dataset_path) + KEY_SUFFIX)
    if generated.exists():
        return load_key(generated, dataset_path)
    text = secrets.token_hex(32)
    generated.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(generated, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    logger.warning("no pseudonymisation key given: generated %s (keep it secret)", generated)
    return PseudonymKey(text.encode("utf-8"), f"generated:{generated}")

"""Library loggers kept below the node's own lines unless ``--log-level DEBUG``.

pynetdicom logs every PDU and, at INFO, C-FIND identifiers (Patient IDs) and dataset dumps;
pydicom's pixel decoders log each failed plugin with a traceback at ERROR, although the node
reports the failure itself, in one line (reason ``pixel-decode``).
"""

from __future__ import annotations

import logging

QUIETED = {
    "pynetdicom": logging.WARNING,
    "highdicom": logging.WARNING,
    "dicomweb_client": logging.WARNING,
    "pydicom.pixels.decoders": logging.CRITICAL,
}
"""Logger name -> the lowest level it logs at, outside DEBUG."""


def quiet_libraries(level: str) -> None:
    """Raise the library loggers of :data:`QUIETED` to their level unless ``level`` is DEBUG."""
    debug = str(level).upper() == "DEBUG"
    for name, quiet in QUIETED.items():
        logging.getLogger(name).setLevel(logging.DEBUG if debug else quiet)

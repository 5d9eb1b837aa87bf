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


_CUT_SHORT = (
    "The received PDU is shorter than expected",
    "Connection closed before the entire PDU was received",
)


class _CutShort(logging.Filter):
    """Drop pynetdicom's lines (one with a traceback) for a connection the node cut short.

    The node logs its own line for those (``event=connection-closed reason=...``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CUT_SHORT)


_FILTER = _CutShort()


def quiet_libraries(level: str) -> None:
    """Raise the library loggers of :data:`QUIETED` to their level unless ``level`` is DEBUG."""
    debug = str(level).upper() == "DEBUG"
    for name, quiet in QUIETED.items():
        logging.getLogger(name).setLevel(logging.DEBUG if debug else quiet)
    dul = logging.getLogger("pynetdicom.dul")
    if debug:
        dul.removeFilter(_FILTER)
    else:
        dul.addFilter(_FILTER)

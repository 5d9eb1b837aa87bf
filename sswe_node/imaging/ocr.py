"""Tesseract calls with one handling of a missing engine or a failed run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def run_tesseract(
    read: Callable[[Any], T], unavailable: str, *, failure_level: int = logging.WARNING
) -> T | None:
    """Run ``read(pytesseract)``; ``None`` when Tesseract is missing or fails.

    Parameters
    ----------
    read : callable
        Called with the ``pytesseract`` module; returns what it read.
    unavailable : str
        What cannot be done without Tesseract (logged once per process and text), e.g.
        ``"colour-bar labels cannot be read"``.
    failure_level : int
        The log level of a failed run (a time-out, an engine error).

    Returns
    -------
    object or None
        What ``read`` returned, or ``None``.
    """
    try:
        import pytesseract
    except ImportError:
        _warn_once(f"pytesseract is not installed: {unavailable}")
        return None
    try:
        return read(pytesseract)
    except pytesseract.TesseractNotFoundError:
        _warn_once(f"Tesseract is not installed: {unavailable}")
    except (RuntimeError, pytesseract.TesseractError) as exc:
        logger.log(failure_level, "Tesseract failed (%s): %s", unavailable, exc)
    return None


def _warn_once(message: str) -> None:
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    logger.warning(message)

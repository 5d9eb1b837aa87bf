"""Compiled kernels: numba's ``njit``, kept in a disk cache wherever one can be written.

The reading core's mark finder and regridding and the output builders fuse several numpy
passes into single compiled loops (:mod:`sswe_node.imaging.kernels`,
:mod:`sswe_node.imaging.grid_kernels`, :mod:`sswe_node.outputs.kernels`). Each is compiled
once per installation (a few seconds at its first call) and kept next to its module, else in
the user's cache directory or ``NUMBA_CACHE_DIR``. Where none of them can be written (a
read-only installation and no home), numba refuses ``cache=True`` at import: the kernels are
then compiled anew in each process rather than failing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numba

__all__ = ["UNCACHED", "kernel"]

logger = logging.getLogger(__name__)

#: The names of the kernels compiled without a disk cache (none could be written).
UNCACHED: list[str] = []


def kernel(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Return a decorator: ``numba.njit(cache=True, nogil=True, **options)``.

    Parameters
    ----------
    **options
        Further ``numba.njit`` options (e.g. ``inline="always"``).

    Returns
    -------
    callable
        The decorator; without a writable cache location it compiles without ``cache``.
    """

    def compile_(func: Callable[..., Any]) -> Any:
        try:
            return numba.njit(cache=True, nogil=True, **options)(func)
        except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
            if not UNCACHED:
                logger.info("compiled kernels made per process (no cache directory): %s", exc)
            UNCACHED.append(f"{func.__module__}.{func.__name__}")
            return numba.njit(nogil=True, **options)(func)

    return compile_

"""Where the shipped defaults are: the checkout's, else an installed wheel's package data.

``config/node.toml`` and ``models/`` of a source checkout, else the copies a wheel carries
under ``sswe_node/_data/`` (put there by ``setup.py``).
"""

from __future__ import annotations

from pathlib import Path

#: The source checkout this package was imported from (when it is one).
CHECKOUT_ROOT = Path(__file__).resolve().parent.parent
#: The package data of an installed wheel: ``config/node.toml`` and ``models/<name>/``.
PACKAGE_DATA = Path(__file__).resolve().parent / "_data"


def shipped_path(relative: str) -> Path:
    """Return the shipped file or folder ``relative`` (``"config/node.toml"``, ``"models"``).

    The checkout's copy wins when the package runs from a source checkout (editable install,
    tests), so that edits there take effect; an installed wheel finds its package data.

    Parameters
    ----------
    relative : str
        Path below the checkout root, e.g. ``"models"``.

    Returns
    -------
    pathlib.Path
        The checkout's path when it exists, else the package data's (which may not exist).
    """
    checkout = CHECKOUT_ROOT / relative
    if checkout.exists() and (CHECKOUT_ROOT / "pyproject.toml").is_file():
        return checkout
    return PACKAGE_DATA / relative

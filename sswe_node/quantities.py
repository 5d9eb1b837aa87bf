"""The physical quantities an elastogram or a model shows, and the unit of each."""

from __future__ import annotations

#: The unit each quantity is given in (elastograms are decoded, models predict, in this unit).
QUANTITY_UNITS: dict[str, str] = {"youngs-modulus": "kPa", "shear-wave-speed": "m/s"}


def unit_of(quantity: str) -> str:
    """Return the unit of ``quantity``.

    Parameters
    ----------
    quantity : str
        ``"youngs-modulus"`` or ``"shear-wave-speed"``.

    Returns
    -------
    str
        ``"kPa"`` or ``"m/s"``.

    Raises
    ------
    ValueError
        For another quantity.
    """
    try:
        return QUANTITY_UNITS[quantity]
    except KeyError:
        raise ValueError(
            f"quantity must be one of {sorted(QUANTITY_UNITS)}, got {quantity!r}"
        ) from None

"""Which colour-bar scale a capture is read at: one rule for the node, ``convert`` and datasets.

1. The scanner's private quantitative data (values stored as numbers) needs no scale:
   ``private-data``.
2. The range printed beside the colour bar, read from the image: ``image-labels``.
3. The scale the caller was given: configured (``config``), a model manifest's colour bar
   (``manifest``) or a command-line option (``option``).

When the labels are readable and disagree with an *explicitly* given scale (configuration,
option), the frame is refused with reason ``scale-mismatch``: one of the two is wrong and
neither may be trusted. A fallback that nobody chose for these captures (a model manifest's
colour bar, the default configuration) gives way to the labels. Labels in another unit than the
quantity being read are refused too. Nothing known: no scale (``no-scale`` for a dataset);
never a guessed one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sswe_node.errors import ScaleMismatchError
from sswe_node.imaging.scale_labels import BarLabels

__all__ = [
    "SCALE_SOURCES",
    "ScaleSetting",
    "ScaleChoice",
    "ScaleMismatchError",
    "choose_scale",
    "as_setting",
]

#: Where a scale can come from, as recorded in the case store, dataset and Parametric Map.
SCALE_SOURCES = ("private-data", "image-labels", "config", "manifest", "option")
#: Scales closer than this fraction of their range agree (labels print rounded values).
_TOLERANCE = 0.005


@dataclass(frozen=True)
class ScaleSetting:
    """A scale known before the image is read.

    Attributes
    ----------
    low, high : float
        The colour bar's minimum and maximum.
    source : str
        ``"config"``, ``"manifest"`` or ``"option"``.
    explicit : bool
        Whether someone set it for these captures (configuration, option): then labels that
        disagree refuse the frame. A fallback (a manifest, a default) gives way to labels.
    """

    low: float
    high: float
    source: str = "option"
    explicit: bool = True

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"scale must be (min, max) with max > min, got {self.scale}")
        if self.source not in SCALE_SOURCES[2:]:
            raise ValueError(f"scale source must be one of {SCALE_SOURCES[2:]}, got {self.source}")

    @property
    def scale(self) -> tuple[float, float]:
        """``(low, high)``."""
        return (self.low, self.high)


@dataclass(frozen=True)
class ScaleChoice:
    """The scale a frame is read at, and why.

    Attributes
    ----------
    scale : tuple of float or None
        ``(min, max)``; None when nothing gives one.
    unit : str
        The unit of the quantity read.
    source : str or None
        One of :data:`SCALE_SOURCES`; None with no scale.
    labels : BarLabels or None
        What the image's labels said, when read.
    """

    scale: tuple[float, float] | None
    unit: str
    source: str | None
    labels: BarLabels | None = None


def as_setting(
    scale: tuple[float, float] | ScaleSetting | None, source: str = "option"
) -> ScaleSetting | None:
    """Return a :class:`ScaleSetting` of a ``(min, max)`` pair (explicit), a setting, or None."""
    if scale is None or isinstance(scale, ScaleSetting):
        return scale
    low, high = (float(v) for v in scale)
    return ScaleSetting(low, high, source=source, explicit=True)


def _agree(a: tuple[float, float], b: tuple[float, float]) -> bool:
    span = max(abs(a[1] - a[0]), abs(b[1] - b[0]))
    return abs(a[0] - b[0]) <= _TOLERANCE * span and abs(a[1] - b[1]) <= _TOLERANCE * span


def choose_scale(
    *,
    unit: str,
    setting: ScaleSetting | None,
    labels: BarLabels | None,
    private: bool = False,
) -> ScaleChoice:
    """Apply the rule: private data, then image labels, then the given scale.

    Parameters
    ----------
    unit : str
        Unit of the quantity being read (``"kPa"``, ``"m/s"``).
    setting : ScaleSetting, optional
        The configured / manifest / option scale.
    labels : BarLabels, optional
        The labels read beside the colour bar (None: absent or unreadable).
    private : bool
        Whether the scanner's private quantitative data gives the values.

    Returns
    -------
    ScaleChoice

    Raises
    ------
    ScaleMismatchError
        Labels readable and in another unit, or disagreeing with an explicit setting.

    Examples
    --------
    >>> labels = BarLabels(0.0, 180.0, "kPa")
    >>> fallback = ScaleSetting(0, 70, "manifest", explicit=False)
    >>> choose_scale(unit="kPa", setting=fallback, labels=labels).source
    'image-labels'
    >>> choose_scale(unit="kPa", setting=ScaleSetting(0, 70, "config"), labels=labels)
    Traceback (most recent call last):
    ...
    sswe_node.errors.ScaleMismatchError: the colour bar is labelled 0-180 kPa but 0-70 kPa ...
    """
    given = setting.scale if setting is not None else None
    if private:
        shown = labels.scale if labels is not None and labels.unit == unit else given
        return ScaleChoice(shown, unit, "private-data", labels)
    if labels is not None:
        if labels.unit != unit:
            raise ScaleMismatchError(
                f"the colour bar is labelled in {labels.unit}, the quantity is read in {unit}"
            )
        if setting is not None and setting.explicit and not _agree(labels.scale, setting.scale):
            where = {"config": "configured", "option": "given as an option"}.get(
                setting.source, "set"
            )
            raise ScaleMismatchError(
                f"the colour bar is labelled {labels.low:g}-{labels.high:g} {unit} but "
                f"{setting.low:g}-{setting.high:g} {unit} is {where}"
            )
        return ScaleChoice(labels.scale, unit, "image-labels", labels)
    if setting is not None:
        return ScaleChoice(setting.scale, unit, setting.source)
    return ScaleChoice(None, unit, None)

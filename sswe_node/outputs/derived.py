"""What every derived object carries: the model as equipment, the warning, source references."""

from __future__ import annotations

from typing import Protocol

from pydicom.dataset import Dataset

from sswe_node import __version__
from sswe_node.outputs.labels import WARNING, quantity_name

__all__ = [
    "ModelInfo",
    "MANUFACTURER",
    "UNPAIRED_BODY_PARTS",
    "contribution_description",
    "derivation_description",
    "scale_description",
    "series_description",
    "source_laterality",
    "mark_derived",
    "mark_source",
]

#: Manufacturer recorded for the model in Contributing Equipment and on derived objects.
MANUFACTURER = "sswe-node"


# Body Part Examined terms of unpaired structures (PS3.16 Annex L; as dciodvfy knows them):
# Laterality (Type 2C) must then be absent. Any other body part, or none, needs Laterality.
UNPAIRED_BODY_PARTS = frozenset(
    """ABDOMEN ABDOMENPELVIS AORTA BLADDER BRAIN CERVIX CHEST CHESTABDOMEN COLON
    CORONARYARTERY CSPINE DUODENUM ESOPHAGUS GALLBLADDER HEAD HEADNECK HEART LARYNX LIVER
    LSPINE MOUTH NECK NOSE PANCREAS PELVIS PENIS PROSTATE RECTUM SKULL SPINE SPLEEN STOMACH
    THYROID TONGUE TRACHEA TSPINE UTERUS VAGINA WHOLEBODY""".split()
)


class ModelInfo(Protocol):
    """The model fields the output builders need (a model manifest satisfies it)."""

    name: str
    version: str
    quantity: str
    unit: str
    colour_bar: tuple[float, float]


def contribution_description(model: ModelInfo) -> str:
    """Return the Contribution Description (ST) of the model's Contributing Equipment item."""
    return (
        f"Synthetic {quantity_name(model.quantity)} predicted from the B-mode by model "
        f"{model.name} {model.version}. {WARNING}"
    )[:1024]


def derivation_description(model: ModelInfo) -> str:
    """Return the Derivation Description (ST, at most 1024 characters)."""
    return (
        f"Synthetic shear-wave elastography: {quantity_name(model.quantity)} in {model.unit} "
        f"predicted from the B-mode image by the model {model.name} {model.version} "
        f"(sswe-node {__version__}). {WARNING}."
    )[:1024]


#: How each scale source reads in a Derivation Description.
_SCALE_SOURCE_WORDS = {
    "private-data": "the scanner's private quantitative data",
    "image-labels": "the labels printed beside the source's colour bar",
    "config": "the node configuration",
    "manifest": "the model manifest",
    "option": "a command-line option",
}


def scale_description(scale: tuple[float, float], unit: str, source: str | None) -> str:
    r"""Return the sentence of a Derivation Description saying which colour-bar scale was used.

    Examples
    --------
    >>> scale_description((0.0, 180.0), "kPa", "image-labels")
    'Colour-bar scale 0-180 kPa, from the labels printed beside the source\'s colour bar.'
    """
    words = _SCALE_SOURCE_WORDS.get(str(source), str(source or "unknown"))
    return f"Colour-bar scale {scale[0]:g}-{scale[1]:g} {unit}, from {words}."


def series_description(model: ModelInfo, kind: str) -> str:
    """Return the Series Description (LO, at most 64 characters) of a derived series."""
    return f"SYNTHETIC SWE {kind} {model.name} {model.version} NOT FOR DIAGNOSIS"[:64]


def source_laterality(source: Dataset) -> str | None:
    """Return the source's laterality (``"R"`` or ``"L"``) when it states one."""
    for keyword in ("Laterality", "ImageLaterality"):
        value = str(source.get(keyword, "") or "")
        if value in ("R", "L"):
            return value
    return None


def mark_derived(derived: Dataset, source: Dataset, model: ModelInfo, kind: str) -> None:
    """Write the warning, descriptions and series-level attributes into a derived object.

    Parameters
    ----------
    derived : pydicom.dataset.Dataset
        The Parametric Map or Secondary Capture, changed in place.
    source : pydicom.dataset.Dataset
        The source instance.
    model : ModelInfo
        The model that produced the values.
    kind : str
        ``"PM"`` or ``"SC"``, used in the Series Description.
    """
    derived.SeriesDescription = series_description(model, kind)
    derived.ImageComments = WARNING
    derived.DerivationDescription = derivation_description(model)
    mark_source(derived, source)


def mark_source(derived: Dataset, source: Dataset) -> None:
    """Copy the source's body part and institution into a derived object and set Laterality.

    The part of :func:`mark_derived` that depends on the source (the rest depends on the model
    only and is written once per model, see :mod:`sswe_node.outputs.header`).
    """
    for keyword in ("BodyPartExamined", "InstitutionName"):
        if source.get(keyword) and keyword not in derived:
            setattr(derived, keyword, source.get(keyword))
    # Laterality is Type 2C in General Series: absent for an unpaired body part, else given
    # (empty where the source does not say).
    body_part = str(derived.get("BodyPartExamined", "") or "").strip().upper()
    if body_part in UNPAIRED_BODY_PARTS:
        if "Laterality" in derived:
            del derived.Laterality
    else:
        derived.Laterality = source_laterality(source)

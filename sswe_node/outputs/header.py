"""The header every derived object shares, written with plain pydicom (no per-object validation).

highdicom spent most of a derived object's build time on IOD look-ups, attribute copies and
logging; the attributes themselves are few and fixed. :func:`new_derived` writes the SOP Common,
Patient, General Study, General Series, General Equipment and General Image attributes, the
Contributing Equipment and the Source Image Sequence the way highdicom did, for any derived
class. Tests check the results with dciodvfy and read them back with highdicom.

What depends on the model, the kind and the study only is written once with pydicom and
encoded once (:class:`RawHeader`); each object copies those raw elements and adds its own,
encoded directly (:mod:`sswe_node.outputs.encoded`).
"""

from __future__ import annotations

import copy
import datetime
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import NamedTuple

from pydicom.charset import convert_encodings
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from sswe_node import __version__
from sswe_node.outputs import encoded
from sswe_node.outputs.derived import (
    MANUFACTURER,
    ModelInfo,
    contribution_description,
    derivation_description,
    mark_source,
    series_description,
)
from sswe_node.outputs.encoded import raw_elements
from sswe_node.outputs.geometry import is_multiframe
from sswe_node.outputs.labels import WARNING
from sswe_node.outputs.numbering import derived_instance_number, derived_series_number
from sswe_node.outputs.uids import derived_instance_uid, derived_series_uid, source_study_uid

__all__ = [
    "Code",
    "SOURCE_FOR_PROCESSING",
    "code_item",
    "item",
    "ModelKey",
    "model_key",
    "fill_reference",
    "new_derived",
    "reference_placeholder",
    "source_reference",
]


class Code(NamedTuple):
    """A coded concept: value, coding scheme designator and meaning."""

    value: str
    scheme: str
    meaning: str


ACQUISITION_EQUIPMENT = Code("109101", "DCM", "Acquisition Equipment")
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")
#: Purpose of reference of the source image in every Source Image Sequence item.
SOURCE_FOR_PROCESSING = Code("121322", "DCM", "Source image for image processing operation")

# Patient, General Study and Patient Study attributes copied from the source when present
# (highdicom copied these modules' top-level attributes); Type 2 ones are written empty else.
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)
_OPTIONAL_PATIENT_STUDY = (
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthTime",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "ProcedureCodeSequence",
    "ReferencedStudySequence",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingService",
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
    "PregnancyStatus",
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointID",
    "ClinicalTrialTimePointDescription",
)
# The source's acquisition equipment, as highdicom's ContributingEquipment.for_image_acquisition.
_ACQUISITION_EQUIPMENT = (
    "Manufacturer",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "InstitutionalDepartmentName",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
)


#: A valid UID standing for one written per object in cached templates.
_PLACEHOLDER_UID = "1.2"


def item(**attributes: object) -> Dataset:
    """Return a dataset (a sequence item) with the given attributes, in keyword order given."""
    dataset = Dataset()
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return dataset


def code_item(code: Code) -> Dataset:
    """Return a code sequence item (Code Value, Coding Scheme Designator, Code Meaning)."""
    return item(CodeValue=code.value, CodingSchemeDesignator=code.scheme, CodeMeaning=code.meaning)


def source_reference(source: Dataset, frame: int) -> Dataset:
    """Return a Source Image Sequence item naming the source (and its frame when multi-frame)."""
    reference = item(
        ReferencedSOPClassUID=source.SOPClassUID, ReferencedSOPInstanceUID=source.SOPInstanceUID
    )
    if is_multiframe(source):
        reference.ReferencedFrameNumber = frame + 1
    reference.PurposeOfReferenceCodeSequence = [code_item(SOURCE_FOR_PROCESSING)]
    return reference


def reference_placeholder() -> Dataset:
    """Return a Source Image Sequence item to be completed by :func:`fill_reference`."""
    return item(
        ReferencedSOPClassUID=_PLACEHOLDER_UID,
        ReferencedSOPInstanceUID=_PLACEHOLDER_UID,
        PurposeOfReferenceCodeSequence=[code_item(SOURCE_FOR_PROCESSING)],
    )


def fill_reference(reference: Dataset, source: Dataset, frame: int) -> None:
    """Complete a :func:`reference_placeholder` item: :func:`source_reference` of a template."""
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if is_multiframe(source):
        reference.ReferencedFrameNumber = frame + 1


def _copy_present(target: Dataset, source: Dataset, keywords: tuple[str, ...]) -> None:
    for keyword in keywords:
        element = source.data_element(keyword) if keyword in source else None
        if element is not None and not element.is_empty:
            target.add(copy.deepcopy(element))


def _acquisition_equipment(source: Dataset) -> Dataset | None:
    """Return the source's acquisition equipment item, when the source names a manufacturer."""
    if not source.get("Manufacturer"):
        return None
    acquisition = Dataset()
    _copy_present(acquisition, source, _ACQUISITION_EQUIPMENT)
    acquisition.ContributionDescription = "Acquisition equipment of the source image(s)"
    acquisition.PurposeOfReferenceCodeSequence = [code_item(ACQUISITION_EQUIPMENT)]
    return acquisition


def _model_equipment(model: ModelInfo) -> Dataset:
    """Return the Contributing Equipment item of the model (processing equipment)."""
    return item(
        Manufacturer=MANUFACTURER,
        ManufacturerModelName=model.name[:64],
        SoftwareVersions=[str(model.version)[:64], f"sswe-node {__version__}"],
        ContributionDescription=contribution_description(model),
        PurposeOfReferenceCodeSequence=[code_item(PROCESSING_EQUIPMENT)],
    )


class ModelKey(NamedTuple):
    """The model fields a derived object's header depends on (a :class:`ModelInfo`)."""

    name: str
    version: str
    quantity: str
    unit: str
    colour_bar: tuple[float, float]


#: Writes the attributes of a derived class that depend on the model only (cached per model).
Fixed = Callable[[Dataset, ModelKey], None]


@lru_cache(maxsize=64)
def _template(model: ModelKey, sop_class_uid: str, kind: str, fixed: Fixed | None) -> bytes:
    """Return the pickled attributes of a derived object that depend on the model and kind only.

    Written once per model and kind, then unpickled per object: far cheaper than setting the
    same attributes again (pydicom converts and validates each value it is given).
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = f"SSWE_NODE_{__version__}"[:16]
    ds.SOPClassUID = sop_class_uid
    ds.Modality = "OT"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = model.name[:64]
    ds.SoftwareVersions = str(model.version)[:64]
    ds.ContributingEquipmentSequence = [_model_equipment(model)]
    ds.SeriesDescription = series_description(model, kind.upper())
    ds.ImageComments = WARNING
    ds.DerivationDescription = derivation_description(model)
    ds.SourceImageSequence = [reference_placeholder()]
    if fixed is not None:
        fixed(ds, model)
    return pickle.dumps(ds, protocol=pickle.HIGHEST_PROTOCOL)


# Every source attribute the study-level part of a header is written from.
_STUDY_LEVEL_TAGS = frozenset(
    BaseTag(tag_for_keyword(keyword))
    for keyword in (
        "SpecificCharacterSet",
        *_TYPE2_PATIENT_STUDY,
        *_OPTIONAL_PATIENT_STUDY,
        *_ACQUISITION_EQUIPMENT,
        "BodyPartExamined",
        "Laterality",
        "ImageLaterality",
    )
)
#: Study-level headers kept (a node works through the instances of a few studies at a time).
STUDY_CACHE_SIZE = 64


def _frozen(value: object) -> Hashable:
    """Return ``value`` as a hashable key (sequences and multiple values as tuples)."""
    if isinstance(value, Sequence):
        return tuple(
            tuple((int(e.tag), e.VR, _frozen(e.value)) for e in dataset) for dataset in value
        )
    if isinstance(value, MultiValue | list | tuple):
        return tuple(_frozen(v) for v in value)
    return value  # type: ignore[return-value]


def _study_key(source: Dataset) -> Hashable | None:
    """Return what the study-level header depends on (None when it cannot be a key)."""
    key = []
    for tag in sorted(source.keys() & _STUDY_LEVEL_TAGS):
        element = source[tag]
        key.append((tag, element.VR, _frozen(element.value)))
    result = tuple(key)
    try:
        hash(result)
    except TypeError:
        return None
    return result


class _StudyTemplates:
    """The headers of recent (model, kind, study) keys, least recently used out."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, RawHeader] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> RawHeader | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: Hashable, data: RawHeader) -> None:
        with self._lock:
            self._items[key] = data
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_STUDY_TEMPLATES = _StudyTemplates(STUDY_CACHE_SIZE)


def _write_study_level(ds: Dataset, source: Dataset) -> None:
    """Write what comes from the source's patient, study and equipment attributes."""
    charset = source.get("SpecificCharacterSet")
    if charset:
        ds.SpecificCharacterSet = charset
    for keyword in _TYPE2_PATIENT_STUDY:
        value = source.get(keyword)
        setattr(ds, keyword, None if value is None or value == "" else value)
    _copy_present(ds, source, _OPTIONAL_PATIENT_STUDY)
    acquisition = _acquisition_equipment(source)
    if acquisition is not None:
        ds.ContributingEquipmentSequence.insert(0, acquisition)
    mark_source(ds, source)


class RawHeader(NamedTuple):
    """A derived object's header written once per model, kind and study, as raw elements."""

    elements: dict
    meta: dict
    character_set: str | list[str] | None
    derivation: str
    comments: str


def _header(
    source: Dataset, model: ModelKey, sop_class_uid: str, kind: str, fixed: Fixed | None
) -> RawHeader:
    """Return the header of a derived object with every attribute but the instance's own.

    The model-level attributes are written once per model and kind, the study-level ones
    once per study (same patient, study and equipment attributes), and encoded once: each
    object copies the raw elements, far cheaper than setting them again.
    """
    study = _study_key(source)
    key = None if study is None else (model, sop_class_uid, kind, fixed, study)
    if key is not None:
        header = _STUDY_TEMPLATES.get(key)
        if header is not None:
            return header
    ds = pickle.loads(_template(model, sop_class_uid, kind, fixed))
    _write_study_level(ds, source)
    charset = ds.get("SpecificCharacterSet")
    charset = (
        None
        if not charset
        else (list(charset) if isinstance(charset, MultiValue) else str(charset))
    )
    encodings = convert_encodings(charset) if charset else None
    header = RawHeader(
        raw_elements(ds, encodings), raw_elements(ds.file_meta), charset,
        str(ds.DerivationDescription), str(ds.ImageComments),
    )  # fmt: skip
    if key is not None:
        _STUDY_TEMPLATES.put(key, header)
    return header


def reference_item(source: Dataset, frame: int, *, spatial: bool = False) -> bytes:
    """Return the encoded :func:`source_reference` item (with Spatial Locations Preserved NO)."""
    parts = {
        0x00081150: encoded.encode(0x00081150, "UI", str(source.SOPClassUID)),
        0x00081155: encoded.encode(0x00081155, "UI", str(source.SOPInstanceUID)),
        0x0040A170: _purpose_of_reference(),
    }
    if is_multiframe(source):
        parts[0x00081160] = encoded.encode(0x00081160, "IS", str(frame + 1))
    if spatial:
        parts[0x0028135A] = encoded.encode(0x0028135A, "CS", "NO")
    return encoded.item(parts)


@lru_cache(maxsize=1)
def _purpose_of_reference() -> bytes:
    code = code_item(SOURCE_FOR_PROCESSING)
    return encoded.sequence(0x0040A170, [encoded.item(encoded.encoded_elements(code))])


def model_key(model: ModelInfo) -> ModelKey:
    """Return the hashable fields of ``model`` the outputs depend on."""
    low, high = model.colour_bar
    return ModelKey(
        str(model.name), str(model.version), str(model.quantity), str(model.unit),
        (float(low), float(high)),
    )  # fmt: skip


def new_derived(
    source: Dataset,
    model: ModelInfo,
    *,
    sop_class_uid: str,
    kind: str,
    frame: int,
    fixed: Fixed | None = None,
    elements: dict | None = None,
) -> Dataset:
    """Start a derived object of one source frame: everything but the image-specific modules.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        The source instance (read only).
    model : ModelInfo
        The model that produced the values.
    sop_class_uid : str
        SOP Class UID of the derived object.
    kind : str
        ``"pm"`` or ``"sc"``: picks the series, numbers and UIDs.
    frame : int
        0-based index of the source frame.
    fixed : callable, optional
        ``fixed(dataset, model_key)`` writes the attributes of the object's class that depend
        on the model only (a module-level function: it is part of the cache key); run once per
        model and kind, its result is copied into every object.
    elements : dict, optional
        ``{Tag: RawDataElement}`` of the object's own attributes (see
        :mod:`sswe_node.outputs.encoded`), added last.

    Returns
    -------
    pydicom.dataset.Dataset
        With file meta (Explicit VR Little Endian), SOP Common (deterministic SOP Instance UID,
        creation date and time, Contributing Equipment), patient and study attributes of the
        source, the derived series, the model as equipment, the warning, the Derivation
        Description and a Source Image Sequence.
    """
    uid = derived_instance_uid(source, frame, model.name, model.version, kind)
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")

    header = _header(source, model_key(model), str(sop_class_uid), kind, fixed)
    own = elements
    elements = dict(header.elements)
    for tag, vr, value in (
        (0x00080012, "DA", date),
        (0x00080013, "TM", time),
        (0x00080018, "UI", uid),
        (0x00080023, "DA", date),
        (0x00080033, "TM", time),
        (0x0020000D, "UI", source_study_uid(source)),
        (0x0020000E, "UI", derived_series_uid(source, model.name, model.version, kind)),
        (0x00200011, "IS", str(derived_series_number(source, kind))),
        (0x00200013, "IS", str(derived_instance_number(source, frame))),
    ):
        elements[BaseTag(tag)] = encoded.raw(tag, vr, encoded.value_bytes(vr, value))
    elements[BaseTag(0x00082112)] = encoded.raw(0x00082112, "SQ", reference_item(source, frame))
    if own:
        elements.update(own)
    meta = dict(header.meta)
    meta[BaseTag(0x00020003)] = encoded.raw(0x00020003, "UI", encoded.value_bytes("UI", uid))
    ds = encoded.raw_dataset(elements, header.character_set)
    ds.file_meta = encoded.raw_file_meta(meta)
    return ds

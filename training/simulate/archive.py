"""Write a simulated DICOM archive of N patients with its ground truth (``write_archive``).

Output layout (format ``sswe-sim-archive``, version 1)::

    OUT/dicom/<PatientID>/study<k>/series<m>/<nnnn>.dcm   one file per instance
    OUT/archive.json                                       index of every instance
    OUT/ground_truth.h5                                    ground truth, one group per SOP UID

Per patient, 3-5 image planes (``images_per_patient`` to fix it). Every plane gives

* ``dual``: the SWE scanner's dual display (study 1, series 1), RGB;
* ``bmode``: the SWE scanner's full-screen B-mode (study 1, series 2), MONOCHROME2;
* ``other-scanner``: the second scanner's B-mode without SWE (study 2, series 1: another visit
  on another system, different probe frequency, gain and size), RGB.

``archive.json`` is an object: ``format``, ``version``, ``seed``, ``organ``, ``engine``,
``quantity``, ``unit``, ``scale`` [min, max], ``note`` and ``instances``, a list with per
instance: ``sop_uid``, ``patient_id``, ``study_uid``, ``series_uid``, ``kind``, ``path``
(relative to OUT), ``plane_id`` (links the renderings of one plane), ``manufacturer``,
``model_name``, ``rows``, ``columns``, ``spacing_mm`` (row, column), ``photometric``, ``jpeg``
and ``boxes`` (``[top, left, bottom, right]``, end exclusive, in frame pixels). Dual captures
have boxes ``elastogram_panel``, ``bmode_panel``, ``swe_box`` (in the elastogram panel),
``bmode_box`` (the same region in the plain B-mode panel) and ``colour_bar``, plus
``scale_min``, ``scale_max``, ``unit``, ``quantity``, ``opacity`` and ``arrangement``; B-mode
kinds have ``imaging_region`` (and ``grey_bar``).

``ground_truth.h5`` (format ``sswe-sim-ground-truth``, version 1) has one group per SOP
Instance UID with float32 datasets:

* dual: ``true_modulus``, ``swe`` (NaN where the scanner shows no colour) and ``confidence``
  (0-1), all on the SWE box's pixel grid (``swe_box`` rows x columns);
* bmode / other-scanner: ``true_modulus`` over the imaging region.

``true_modulus`` and ``swe`` are in the group's ``unit`` (kPa for ``quantity``
``youngs-modulus``, m/s for ``shear-wave-speed``); fluid is 0. Group attributes: ``kind``,
``plane_id``, ``quantity``, ``unit``, ``box`` (the grid's box in frame pixels), ``spacing_mm``,
``path``. All data is synthetic and not for diagnosis.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray
from pydicom.uid import generate_uid
from threadpoolctl import threadpool_limits

from sswe_node.imaging.regions import COLOUR_BAR, COLOUR_FLOW, GREY_BAR, TISSUE
from training.simulate.bmode import form_bmode
from training.simulate.instance import InstanceInfo, Region, build_dataset
from training.simulate.profiles import PROFILES, Acquisition, draw_acquisition, gland_depth
from training.simulate.render import (
    Box,
    draw_annotations,
    draw_scale,
    render_dual,
    render_fullscreen,
)
from training.simulate.scanners import SETUPS
from training.simulate.strain import StrainSettings, render_strain_dual, simulate_strain
from training.simulate.swe import SweSettings, acquire_swe
from training.simulate.tissue import (
    ORGANS,
    Phantom,
    TissueMaps,
    draw_patient_traits,
    make_phantom,
    modulus_to_speed,
)

__all__ = ["ArchiveSummary", "write_archive", "ARCHIVE_FORMAT", "GROUND_TRUTH_FORMAT"]

logger = logging.getLogger(__name__)

ARCHIVE_FORMAT = "sswe-sim-archive"
GROUND_TRUTH_FORMAT = "sswe-sim-ground-truth"
FORMAT_VERSION = 1
NOTE = "Synthetic phantom data from sswe-node's simulator: not patient data, not for diagnosis."
ARRANGEMENTS = ("left-right", "top-bottom", "mixed")
VARIABILITY = ("full", "none")
#: Offsets of the per-acquisition generators (one stream per kind of image).
_ACQ_STREAM = {"dual": 101, "bmode": 102, "other-scanner": 103, "strain": 104}


@dataclass
class ArchiveSummary:
    """What :func:`write_archive` wrote."""

    out_dir: Path
    patients: int
    planes: int
    instances: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        kinds = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
        return (
            f"{self.instances} instances ({kinds}) of {self.patients} patients, "
            f"{self.planes} planes, in {self.out_dir} ({self.seconds:.1f} s)"
        )


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=["sswe-sim", str(seed), *map(str, parts)])


def _slice_maps(maps: TissueMaps, box: Box) -> TissueMaps:
    rs, cs = slice(box.top, box.bottom), slice(box.left, box.right)
    return TissueMaps(
        modulus_kpa=maps.modulus_kpa[rs, cs],
        echo_db=maps.echo_db[rs, cs],
        density=maps.density[rs, cs],
        fluid=maps.fluid[rs, cs],
        transmission=maps.transmission[rs, cs],
        label=maps.label[rs, cs],
        spacing_mm=maps.spacing_mm,
        z_mm=maps.z_mm[rs],
        x_mm=maps.x_mm[cs],
    )


def _in_unit(modulus_kpa: NDArray[np.float32], quantity: str) -> NDArray[np.float32]:
    if quantity == "shear-wave-speed":
        return modulus_to_speed(modulus_kpa)
    return modulus_kpa.astype(np.float32)


@dataclass
class _Rendering:
    kind: str
    dataset: Any
    record: dict[str, Any]
    truth: dict[str, NDArray[np.float32]]
    truth_box: Box


class _ArchiveWriter:
    def __init__(
        self,
        out_dir: Path,
        seed: int,
        organ: str,
        engine: str,
        opacity: float,
        arrangement: str,
        jpeg: bool,
        other_scanner: bool,
        variability: str = "full",
        qse: bool = False,
        scales: str = "fixed",
        annotations: bool = False,
    ) -> None:
        self.out_dir = out_dir
        self.scales = scales
        self.annotations = annotations
        self.seed = seed
        self.spec = ORGANS[organ]
        self.setup = SETUPS[organ]
        self.profiles = PROFILES[organ]
        self.vary = variability == "full"
        self.qse = qse
        # archives written with other options hold other pixels: they get other UIDs (the
        # strain captures draw from their own generators: other instances keep their pixels)
        self.variant = f"{organ}|{engine}|{opacity:g}|{arrangement}|{jpeg}|{other_scanner}"
        if variability != "full":
            self.variant += f"|{variability}"
        if scales != "fixed" or annotations:
            self.variant += f"|{scales}|{annotations}"
        self.engine = engine
        self.opacity = opacity
        self.arrangement = arrangement
        self.jpeg = jpeg
        self.other_scanner = other_scanner
        self.records: list[dict[str, Any]] = []
        # ground truth of the instances written, for the parent process to store
        self.truths: list[tuple[str, dict[str, NDArray[np.float32]], dict[str, Any]]] = []
        # US Image Type value 3 (a defined term of PS3.3 C.8.5.6.1.1)
        self.image_type3 = "ENDORECTAL" if organ == "prostate" else "SMALL PARTS"

    def patient_info(self, p: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, p, 7001])
        base = dt.date(2024, 1, 8) + dt.timedelta(days=int(rng.integers(0, 600)))
        born = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 35 * 365)))
        sex = "M" if self.spec.name == "prostate" else ("F" if rng.uniform() < 0.75 else "M")
        return {
            "patient_id": f"SIM{self.seed:04d}{self.spec.name[:2].upper()}{p + 1:03d}",
            "patient_name": f"PHANTOM^{self.spec.name.upper()}{p + 1:03d}",
            "birth": born.strftime("%Y%m%d"),
            "sex": sex,
            "dates": [base, base + dt.timedelta(days=int(rng.integers(3, 60)))],
            "times": [f"{int(rng.integers(8, 17)):02d}{int(rng.integers(0, 60)):02d}00"] * 2,
            "planes": int(rng.integers(3, 6)),
        }

    def info(
        self, pat: dict[str, Any], p: int, study: int, series: int, number: int, desc: str
    ) -> InstanceInfo:
        return InstanceInfo(
            patient_id=pat["patient_id"],
            patient_name=pat["patient_name"],
            patient_birth_date=pat["birth"],
            patient_sex=pat["sex"],
            study_uid=_uid(self.seed, self.variant, p, "study", study),
            study_id=str(study),
            study_date=pat["dates"][study - 1].strftime("%Y%m%d"),
            study_time=pat["times"][study - 1],
            accession=f"A{self.seed:04d}{p + 1:03d}{study}",
            study_description=f"US {self.spec.name} (synthetic)",
            series_uid=_uid(self.seed, self.variant, p, "series", study, series),
            series_number=series,
            series_description=desc,
            sop_uid=_uid(self.seed, self.variant, p, "sop", study, series, number),
            instance_number=number,
            body_part=self.spec.name.upper(),
        )

    def acquisition(
        self, kind: str, phantom: Phantom, plane: tuple[int, int]
    ) -> tuple[Acquisition, np.random.Generator]:
        """Draw the settings of one image; return them and their generator."""
        acq_rng = np.random.default_rng([self.seed, *plane, _ACQ_STREAM[kind]])
        profile = self.profiles[kind]
        return draw_acquisition(profile, acq_rng, gland_depth(phantom), self.vary), acq_rng

    def dual(
        self,
        phantom: Phantom,
        rng: np.random.Generator,
        arrangement: str,
        plane: tuple[int, int] = (0, 0),
    ) -> tuple[Any, dict[str, Any], dict[str, NDArray[np.float32]], Box, list[Region]]:
        scanner = self.setup.swe_scanner
        setting, acq_rng = self.acquisition("dual", phantom, plane)
        geo = setting.geometry
        x, z = geo.axes()
        maps = setting.maps(phantom)
        bmode = form_bmode(maps, setting.probe, setting.display, rng, self.engine)
        h = int(geo.rows * rng.uniform(0.55, 0.8))
        w = int(geo.cols * rng.uniform(0.6, 0.9))
        top = int(rng.integers(12, min(60, geo.rows - h - 8)))
        left = int(rng.integers(10, geo.cols - w - 10))
        box = Box(top, left, top + h, left + w)
        if self.vary:
            settings = SweSettings.draw(acq_rng, self.setup.swe_half_depth_mm)
        else:
            settings = SweSettings(half_depth_mm=self.setup.swe_half_depth_mm)
        acq = acquire_swe(_slice_maps(maps, box), rng, self.spec.quantity, settings)
        header = f"{self.spec.name.capitalize()}  {scanner.probe.name}  SWE {self.spec.unit}"
        # the operator's colour-bar range and measurement marks: own generators, so that the
        # other pixels do not change with these options
        scale, marks = self.spec.scale, ()
        if self.scales == "random":
            scale = draw_scale(np.random.default_rng([self.seed, *plane, 4201]), self.spec.unit)
        if self.annotations:
            marks = draw_annotations(
                np.random.default_rng([self.seed, *plane, 4202]), box, self.spec.unit
            )
        frame, layout = render_dual(
            bmode, acq.swe, box, scale=scale, unit=self.spec.unit,
            spacing_mm=geo.spacing_mm, top_mm=geo.top_mm, opacity=self.opacity,
            arrangement=arrangement, header=header, annotations=marks,
        )  # fmt: skip
        b = layout.boxes
        box_depth = geo.top_mm + box.top * geo.spacing_mm
        box_x = x[box.left : box.right]
        centre_x = float(x[geo.cols // 2])
        regions = [
            Region(b["elastogram_panel"], TISSUE, geo.spacing_mm, geo.top_mm, centre_x),
            Region(b["swe_box"], COLOUR_FLOW, geo.spacing_mm, box_depth, float(box_x[w // 2])),
            Region(b["bmode_panel"], TISSUE, geo.spacing_mm, geo.top_mm, centre_x),
            Region(b["colour_bar"], COLOUR_BAR),
        ]
        record = {
            "boxes": {k: v.as_list() for k, v in b.items()},
            "spacing_mm": [geo.spacing_mm, geo.spacing_mm],
            "scale_min": scale[0],
            "scale_max": scale[1],
            "annotations": [m.record() for m in marks],
            "unit": acq.unit,
            "quantity": acq.quantity,
            "opacity": self.opacity,
            "arrangement": arrangement,
            "acquisition": setting.record(),
            "swe_artefacts": settings.record(),
            "tissue": phantom.record(),
        }
        truth = {"true_modulus": acq.true_values, "swe": acq.swe, "confidence": acq.confidence,
                 "label": maps.label[box.slices].astype(np.float32)}  # fmt: skip
        return frame, record, truth, b["swe_box"], regions

    def bmode_only(
        self,
        phantom: Phantom,
        rng: np.random.Generator,
        other: bool,
        header: str,
        plane: tuple[int, int] = (0, 0),
    ) -> tuple[Any, dict[str, Any], dict[str, NDArray[np.float32]], Box, list[Region]]:
        setting, _ = self.acquisition("other-scanner" if other else "bmode", phantom, plane)
        geo = setting.geometry
        x, z = geo.axes()
        shift = float(rng.uniform(-3, 3)) if other else 0.0  # another probe position, day
        x = x + shift
        maps = setting.maps(phantom, shift)
        bmode = form_bmode(maps, setting.probe, setting.display, rng, self.engine)
        fan = geo.fan_mask()
        if fan is not None:
            bmode[~fan] = 0
        self.last_bmode = (bmode, maps, setting, fan)
        frame, layout = render_fullscreen(
            bmode, spacing_mm=geo.spacing_mm, top_mm=geo.top_mm, header=header, rgb=other,
            ruler_side="right" if other else "left", grey_bar=not other,
        )  # fmt: skip
        b = layout.boxes
        centre_x = float(x[geo.cols // 2])
        regions = [Region(b["imaging_region"], TISSUE, geo.spacing_mm, geo.top_mm, centre_x)]
        if "grey_bar" in b:
            regions.append(Region(b["grey_bar"], GREY_BAR))
        record = {
            "boxes": {k: v.as_list() for k, v in b.items()},
            "spacing_mm": [geo.spacing_mm, geo.spacing_mm],
            "unit": self.spec.unit,
            "quantity": self.spec.quantity,
            "acquisition": setting.record(),
            "tissue": phantom.record(),
        }
        true = _in_unit(maps.modulus_kpa, self.spec.quantity)
        label = maps.label.astype(np.float32)
        if fan is not None:  # outside the sector there is no image: no truth either
            true = np.where(fan, true, np.nan).astype(np.float32)
            label = np.where(fan, label, np.nan).astype(np.float32)
        truth = {"true_modulus": true, "label": label}
        return frame, record, truth, b["imaging_region"], regions

    def strain_capture(
        self, phantom: Phantom, plane: tuple[int, int], header: str
    ) -> tuple[Any, dict[str, Any], dict[str, NDArray[np.float32]], Box, list[Region]]:
        """Render the second scanner's B-mode / strain screen of its last B-mode image."""
        bmode, maps, setting, fan = self.last_bmode
        geo = setting.geometry
        rng = np.random.default_rng([self.seed, *plane, _ACQ_STREAM["strain"]])
        label_rng = np.random.default_rng([self.seed, *plane, _ACQ_STREAM["strain"] + 1])
        settings = StrainSettings.draw(rng, label_rng)
        h = int(geo.rows * rng.uniform(0.6, 0.8))
        w = int(geo.cols * rng.uniform(0.55, 0.75))
        top = int(rng.integers(int(0.06 * geo.rows), geo.rows - h - 4))
        left = int(rng.integers((geo.cols - w) // 3, (2 * (geo.cols - w)) // 3 + 1))
        box = Box(top, left, top + h, left + w)
        sliced = _slice_maps(maps, box)
        qse = simulate_strain(sliced, rng, settings)
        display = qse.display
        relative = qse.relative
        grey = bmode
        if fan is not None:
            inside = fan[box.slices]
            relative = np.where(inside, relative, np.nan).astype(np.float32)
        frame, layout = render_strain_dual(
            grey, np.nan_to_num(display), box, settings, spacing_mm=geo.spacing_mm,
            top_mm=geo.top_mm, header=header,
        )  # fmt: skip
        if fan is not None:  # the strain colour stays inside the fan
            frame = np.array(frame)
            sb = layout.boxes["strain_box"]
            view = frame[sb.slices]
            view[~inside] = 0
        b = layout.boxes
        x, _ = geo.axes()
        centre_x = float(x[geo.cols // 2])
        box_depth = geo.top_mm + box.top * geo.spacing_mm
        regions = [
            Region(b["strain_panel"], TISSUE, geo.spacing_mm, geo.top_mm, centre_x),
            Region(b["strain_box"], COLOUR_FLOW, geo.spacing_mm, box_depth,
                   float(x[(box.left + box.right) // 2])),
            Region(b["bmode_panel"], TISSUE, geo.spacing_mm, geo.top_mm, centre_x),
            Region(b["colour_bar"], COLOUR_BAR),
        ]  # fmt: skip
        true = _in_unit(sliced.modulus_kpa, self.spec.quantity)
        label = sliced.label.astype(np.float32)
        if fan is not None:
            true = np.where(inside, true, np.nan).astype(np.float32)
            label = np.where(inside, label, np.nan).astype(np.float32)
        record = {
            "boxes": {k: v.as_list() for k, v in b.items()},
            "spacing_mm": [geo.spacing_mm, geo.spacing_mm],
            "unit": "relative",
            "quantity": "relative-strain",
            "acquisition": setting.record(),
            "strain": settings.record(),
            "tissue": phantom.record(),
        }
        truth = {"relative_strain": relative, "true_modulus": true, "label": label}
        return frame, record, truth, b["strain_box"], regions

    def write(
        self,
        frame: NDArray[np.uint8],
        info: InstanceInfo,
        kind: str,
        plane_id: str,
        scanner: Any,
        regions: list[Region],
        record: dict[str, Any],
        truth: dict[str, NDArray[np.float32]],
        truth_box: Box,
        jpeg: bool,
        image_type: tuple[str, ...],
    ) -> None:
        ds = build_dataset(
            frame, info, scanner, regions, jpeg=jpeg, image_type=image_type,
            comments=f"Plane {plane_id}; {kind}.",
        )  # fmt: skip
        rel = (
            Path("dicom")
            / info.patient_id
            / f"study{info.study_id}"
            / f"series{info.series_number}"
            / f"{info.instance_number:04d}.dcm"
        )
        path = self.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        entry = {
            "sop_uid": info.sop_uid,
            "patient_id": info.patient_id,
            "study_uid": info.study_uid,
            "series_uid": info.series_uid,
            "kind": kind,
            "path": rel.as_posix(),
            "plane_id": plane_id,
            "organ": self.spec.name,
            "manufacturer": scanner.manufacturer,
            "model_name": scanner.model_name,
            "rows": int(frame.shape[0]),
            "columns": int(frame.shape[1]),
            "photometric": str(ds.PhotometricInterpretation),
            "jpeg": bool(jpeg),
            **record,
        }
        self.records.append(entry)
        attrs = {
            "kind": kind,
            "plane_id": plane_id,
            "quantity": record["quantity"],
            "unit": record["unit"],
            "box": truth_box.as_list(),
            "spacing_mm": record["spacing_mm"],
            "path": rel.as_posix(),
        }
        self.truths.append(
            (info.sop_uid, {k: v.astype(np.float32) for k, v in truth.items()}, attrs)
        )

    def patient(self, p: int, planes: int | None) -> int:
        pat = self.patient_info(p)
        n_planes = planes if planes is not None else pat["planes"]
        traits = draw_patient_traits(
            np.random.default_rng([self.seed, p, 9001]), self.spec.name, self.vary
        )
        for k in range(n_planes):
            rng = np.random.default_rng([self.seed, p, k])
            phantom = make_phantom(rng, self.spec.name, traits)
            plane_id = f"{pat['patient_id']}-P{k + 1}"
            if self.arrangement == "mixed":
                arrangement = ("left-right", "top-bottom")[(p + k) % 2]
            else:
                arrangement = self.arrangement
            frame, record, truth, tbox, regions = self.dual(phantom, rng, arrangement, (p, k))
            self.write(
                frame, self.info(pat, p, 1, 1, k + 1, "SWE dual (synthetic)"), "dual", plane_id,
                self.setup.swe_scanner, regions, record, truth, tbox, self.jpeg,
                ("ORIGINAL", "PRIMARY", self.image_type3),
            )  # fmt: skip
            header = f"{self.spec.name.capitalize()}  {self.setup.swe_scanner.probe.name}  B-mode"
            frame, record, truth, tbox, regions = self.bmode_only(
                phantom, rng, False, header, (p, k)
            )
            self.write(
                frame, self.info(pat, p, 1, 2, k + 1, "B-mode (synthetic)"), "bmode", plane_id,
                self.setup.swe_scanner, regions, record, truth, tbox, False,
                ("ORIGINAL", "PRIMARY", self.image_type3),
            )  # fmt: skip
            if self.other_scanner:
                header = f"{self.setup.other_scanner.probe.name}  {self.spec.name.upper()}  2D"
                frame, record, truth, tbox, regions = self.bmode_only(
                    phantom, rng, True, header, (p, k)
                )
                self.write(
                    frame, self.info(pat, p, 2, 1, k + 1, "B-mode other scanner (synthetic)"),
                    "other-scanner", plane_id, self.setup.other_scanner, regions, record, truth,
                    tbox, self.jpeg, ("ORIGINAL", "PRIMARY", self.image_type3),
                )  # fmt: skip
                if self.qse:
                    header = f"{self.setup.other_scanner.probe.name}  {self.spec.name.upper()}"
                    frame, record, truth, tbox, regions = self.strain_capture(
                        phantom, (p, k), header
                    )
                    self.write(
                        frame, self.info(pat, p, 2, 2, k + 1, "Strain elastography (synthetic)"),
                        "strain", plane_id, self.setup.other_scanner, regions, record, truth,
                        tbox, self.jpeg, ("ORIGINAL", "PRIMARY", self.image_type3),
                    )  # fmt: skip
        return n_planes


def _patient_job(
    job: tuple[tuple[Any, ...], int, int | None],
) -> tuple[int, list[dict[str, Any]], list[tuple[str, dict[str, NDArray[np.float32]], Any]]]:
    """Simulate and write the DICOM files of one patient; return its records and truth."""
    options, p, planes = job
    writer = _ArchiveWriter(*options)
    # one thread per native pool (BLAS, OpenMP): threads only contend on small matrices and
    # oversubscribe the cores when patients run in parallel processes
    with threadpool_limits(limits=1):
        n_planes = writer.patient(p, planes)
    return n_planes, writer.records, writer.truths


def _store_truth(
    h5: h5py.File, sop_uid: str, arrays: dict[str, NDArray[np.float32]], attrs: dict[str, Any]
) -> None:
    group = h5.create_group(sop_uid)
    for name, array in arrays.items():
        group.create_dataset(
            name, data=array, compression="gzip", compression_opts=1, shuffle=True, chunks=True
        )
    for key, value in attrs.items():
        group.attrs[key] = value


def write_archive(
    out_dir: str | Path,
    patients: int = 3,
    seed: int = 0,
    organ: str = "prostate",
    engine: str = "fast",
    *,
    images_per_patient: int | None = None,
    opacity: float = 0.8,
    arrangement: str = "mixed",
    jpeg: bool = False,
    other_scanner: bool = True,
    progress: bool = False,
    workers: int = 1,
    variability: str = "full",
    qse: bool = False,
    scales: str = "fixed",
    annotations: bool = False,
) -> ArchiveSummary:
    """Write a simulated DICOM archive with its ground truth (layout: module docstring).

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created); it must be absent or empty (``FileExistsError`` otherwise).
    patients : int
        Number of synthetic patients.
    seed : int
        Everything (images, UIDs, names, dates) is a pure function of the seed and options.
    organ : {"prostate", "thyroid"}
        Prostate: Young's modulus in kPa, scale 0-70; thyroid: shear-wave speed in m/s, 0-10.
    engine : {"fast", "pymust"}
        B-mode engine (pymust is slow: seconds per image).
    images_per_patient : int, optional
        Image planes per patient (default: 3-5, drawn per patient). Each plane gives a dual
        capture, a full-screen B-mode and (``other_scanner``) a second-scanner B-mode.
    opacity : float
        Elastogram opacity over the B-mode in dual captures (0-1].
    arrangement : {"mixed", "left-right", "top-bottom"}
        Dual display arrangement; "mixed" alternates between planes.
    jpeg : bool
        JPEG baseline (YBR_FULL_422) compress the RGB instances (dual and other-scanner).
    other_scanner : bool
        Also render every plane with the second scanner (no SWE).
    progress : bool
        Show a progress bar.
    workers : int
        Processes simulating patients in parallel (the output does not depend on it).
    variability : {"full", "none"}
        ``"full"``: scanner settings, SWE artefacts and the patient's stiffness-echogenicity
        relation drawn per acquisition / patient (``training.simulate.profiles``), recorded
        in ``archive.json``; ``"none"``: the nominal settings of every profile, linear
        geometry, no artefact draws, one relation for all patients.
    qse : bool
        Also write the second scanner's quasi-static strain elastography capture of every
        plane (kind ``"strain"``, study 2, series 2; needs ``other_scanner``).
    scales : {"fixed", "random"}
        Colour-bar range of dual captures: the organ's (0-70 kPa, 0-10 m/s), or drawn per
        acquisition from ``training.simulate.render.SCALE_MAXIMA`` (kPa: 40, 70, 90, 180,
        300; m/s: 5, 7, 10); burned in beside the bar and recorded as ``scale_min/max``.
    annotations : bool
        Burn an operator's measurement marks into dual captures (Q-Box rings, calipers,
        crosses, a result text; recorded per instance as ``annotations``).

    Returns
    -------
    ArchiveSummary
    """
    if organ not in ORGANS:
        raise ValueError(f"unknown organ {organ!r}; expected one of {sorted(ORGANS)}")
    if engine not in ("fast", "pymust"):
        raise ValueError(f"unknown engine {engine!r}; expected 'fast' or 'pymust'")
    if arrangement not in ARRANGEMENTS:
        raise ValueError(f"unknown arrangement {arrangement!r}; expected one of {ARRANGEMENTS}")
    if not 0.0 < opacity <= 1.0:
        raise ValueError(f"opacity must be in (0, 1], got {opacity}")
    if patients < 1:
        raise ValueError("patients must be at least 1")
    if images_per_patient is not None and images_per_patient < 1:
        raise ValueError("images_per_patient must be at least 1")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if variability not in VARIABILITY:
        raise ValueError(f"unknown variability {variability!r}; expected one of {VARIABILITY}")
    if scales not in ("fixed", "random"):
        raise ValueError(f"unknown scales {scales!r}; expected 'fixed' or 'random'")
    if qse and not other_scanner:
        raise ValueError("strain captures (qse) are made by the second scanner: keep it on")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        # Mixing two archives in one folder would leave images without matching ground truth.
        raise FileExistsError(f"{out} is not empty: write a simulated archive to a new folder")
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    options = (
        out,
        seed,
        organ,
        engine,
        opacity,
        arrangement,
        jpeg,
        other_scanner,
        variability,
        qse,
        scales,
        annotations,
    )
    jobs = [(options, p, images_per_patient) for p in range(patients)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=patients, unit="patient", desc="simulate")
    planes = 0
    records: list[dict[str, Any]] = []
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        results = pool.map(_patient_job, jobs) if pool is not None else map(_patient_job, jobs)
        with h5py.File(out / "ground_truth.h5", "w") as h5:
            h5.attrs["format"] = GROUND_TRUTH_FORMAT
            h5.attrs["version"] = FORMAT_VERSION
            h5.attrs["seed"] = seed
            h5.attrs["organ"] = organ
            h5.attrs["note"] = NOTE
            for n_planes, patient_records, truths in results:
                planes += n_planes
                records.extend(patient_records)
                for sop_uid, arrays, attrs in truths:
                    _store_truth(h5, sop_uid, arrays, attrs)
                if bar is not None:
                    bar.update(1)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
    spec = ORGANS[organ]
    index = {
        "format": ARCHIVE_FORMAT,
        "version": FORMAT_VERSION,
        "seed": seed,
        "organ": organ,
        "engine": engine,
        "quantity": spec.quantity,
        "unit": spec.unit,
        "scale": list(spec.scale),
        "variability": variability,
        "qse": qse,
        "profiles": {k: v.name for k, v in PROFILES[organ].items()},
        "note": NOTE,
        "instances": records,
    }
    (out / "archive.json").write_text(json.dumps(index, indent=1))
    counts: dict[str, int] = {}
    for r in records:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    summary = ArchiveSummary(
        out, patients, planes, len(records), counts, time.perf_counter() - start
    )
    logger.info("simulated archive: %s", summary)
    return summary

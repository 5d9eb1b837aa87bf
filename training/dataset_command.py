"""`sswe-node dataset`: build a training dataset from a DICOM folder or a PACS; inspect one."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sswe_node.aetitle import add_calling_aet, add_move_aet, peer_text_argument

if TYPE_CHECKING:
    from training.pacs import QueryFilters, RetrieveReport, SeriesRef

HELP = "build or inspect a training dataset from a DICOM folder or PACS (research use only)"

_EPILOG = """\
examples:
  sswe-node dataset build train.h5 --folder /data/archive --scale 0 70 --organ prostate
  sswe-node dataset build train.h5 --pacs PACS@pacs.example:104 --calling-aet SSWE_DS \\
      --move-aet SSWE_DS --move-port 11113 --modality US --date-from 20240101 \\
      --cache cache/ --scale 0 70
  sswe-node dataset build train.h5 --pacs PACS@pacs.example:104 --retrieve get \\
      --patients ids.txt --scale 0 70
  sswe-node dataset build train.h5 --dicomweb https://archive.example/dicom-web \\
      --token-env ARCHIVE_TOKEN --modality US --parallel 4 --scale 0 70
  sswe-node dataset info train.h5

Dual captures need the colour bar range (--scale MIN MAX, in kPa or m/s) unless the scanner
stores the values; without it they are rejected as "no-scale" (and the command fails).
The quantity follows the organ unless --quantity is given: thyroid shear-wave speed (m/s),
other organs Young's modulus (kPa); without --organ, each instance's BodyPartExamined decides.

Patient IDs are replaced by HMAC-SHA256 keyed hashes. The key comes from --key-file, else the
SSWE_DATASET_KEY environment variable, else OUT.key (generated on first use; keep it secret and
reuse it for incremental builds). See docs/dataset.md.
"""


_PACS_ONLY = frozenset(
    {"retrieve", "calling_aet", "move_aet", "move_port", "move_bind", "cache", "parallel",
     "modality", "date_from", "date_to", "station", "manufacturer", "patients"}
)  # fmt: skip


def _grid(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 96x64, got {text!r}") from None
    return rows, cols


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``build`` and ``info`` sub-commands and their options."""
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="build or grow a dataset file (only new instances are processed)",
        description="Build or grow a dataset file from a DICOM folder or a PACS.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("out", type=Path, help="dataset file to create or grow (HDF5)")
    source = build.add_argument_group("source (one of)")
    where = source.add_mutually_exclusive_group(required=True)
    where.add_argument("--folder", type=Path, help="DICOM folder tree (DICOMDIR too)")
    where.add_argument(
        "--pacs", type=peer_text_argument, metavar="AE@HOST:PORT",
        help="Query/Retrieve SCP to pull from (IPv6: AE@[::1]:104)",
    )  # fmt: skip
    where.add_argument(
        "--dicomweb", metavar="URL", help="DICOMweb archive to pull from (QIDO-RS + WADO-RS)"
    )
    web = build.add_argument_group("DICOMweb access (with --dicomweb)")
    web.add_argument("--token-env", metavar="VAR", help="bearer token from this variable")
    web.add_argument("--token-file", metavar="FILE", help="bearer token from this file")
    web.add_argument("--username", help="HTTP basic user (password from the next two)")
    web.add_argument("--password-env", metavar="VAR", help="HTTP basic password variable")
    web.add_argument("--password-file", metavar="FILE", help="HTTP basic password file")
    web.add_argument("--client-certificate", metavar="PEM", help="client certificate (TLS)")
    web.add_argument("--client-key", metavar="PEM", help="its private key")
    web.add_argument("--ca-certificates", metavar="PEM", help="CA bundle for the server")
    pacs = build.add_argument_group("PACS retrieval")
    pacs.add_argument(
        "--retrieve", choices=("move", "get"), default="move",
        help="C-MOVE to our temporary storage SCP (default) or C-GET",
    )  # fmt: skip
    add_calling_aet(pacs, default="SSWE_DATASET", help="our AE title as SCU (SSWE_DATASET)")
    add_move_aet(pacs, help="AE title the PACS knows our storage SCP by (C-MOVE destination)")
    pacs.add_argument("--move-port", type=int, help="port of our temporary storage SCP (C-MOVE)")
    pacs.add_argument(
        "--move-bind", default="0.0.0.0", help="address our storage SCP listens on (0.0.0.0)"
    )
    pacs.add_argument(
        "--cache", type=Path,
        help="retrieval cache folder; a rerun fetches only what is missing (default: OUT.cache)",
    )  # fmt: skip
    pacs.add_argument(
        "--parallel", type=int, default=2, help="simultaneous associations (default 2)"
    )
    filters = build.add_argument_group("PACS query filters")
    filters.add_argument("--modality", default="US", help="series modality (default US)")
    filters.add_argument("--date-from", metavar="YYYYMMDD", help="first StudyDate")
    filters.add_argument("--date-to", metavar="YYYYMMDD", help="last StudyDate")
    filters.add_argument("--station", help="StationName (wildcards * ?)")
    filters.add_argument("--manufacturer", help="Manufacturer (wildcards * ?)")
    filters.add_argument("--patients", type=Path, metavar="FILE", help="PatientIDs, one a line")
    opts = build.add_argument_group("building")
    opts.add_argument("--organ", help="organ for every row (default: BodyPartExamined)")
    opts.add_argument(
        "--min-coverage", type=float, default=0.2,
        help="minimum fraction of SWE-box pixels with confidence > 0.75 (default 0.2)",
    )  # fmt: skip
    opts.add_argument("--grid", type=_grid, default=(96, 64), help="model grid ROWSxCOLS (96x64)")
    opts.add_argument(
        "--scale", type=float, nargs=2, metavar=("MIN", "MAX"),
        help="colour bar range of the elastograms (needed unless the scanner stores values)",
    )  # fmt: skip
    opts.add_argument(
        "--quantity", choices=("youngs-modulus", "shear-wave-speed"),
        help="what the elastograms show (kPa or m/s; default: by organ, thyroid "
        "shear-wave-speed, others youngs-modulus)",
    )  # fmt: skip
    opts.add_argument(
        "--opacity", type=float,
        help="known elastogram overlay opacity 0-1 (default: estimated per frame, slower)",
    )  # fmt: skip
    opts.add_argument("--max-frames", type=int, default=16, help="frames per instance (16)")
    opts.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1),
        help="reading processes (default min(2, CPUs))",
    )  # fmt: skip
    opts.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="read on a Dask cluster (tcp://HOST:8786; 'local': a LocalCluster of --workers)",
    )  # fmt: skip
    opts.add_argument("--key-file", type=Path, help="pseudonymisation key file")
    opts.add_argument("--no-progress", action="store_true", help="no progress bars")
    opts.add_argument(
        "--json", action="store_true", help="print the build's summary as JSON (the rest: stderr)"
    )

    info = sub.add_parser("info", help="print a dataset file's summary")
    info.add_argument("file", type=Path, help="dataset file")
    info.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``dataset build`` or ``dataset info``."""
    if args.dataset_command == "info":
        return _info(args)
    return _build(args)


def _build(args: argparse.Namespace) -> int:
    from training.dataset import BuildOptions, build_from_folder
    from training.pseudonym import load_key

    options = BuildOptions(
        grid=tuple(args.grid),
        organ=args.organ,
        min_coverage=args.min_coverage,
        scale=tuple(args.scale) if args.scale else None,
        quantity=args.quantity,
        opacity=args.opacity,
        max_frames=args.max_frames,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    key = load_key(args.key_file, args.out)
    say = sys.stderr if args.json else sys.stdout  # with --json, stdout is the JSON only
    if key.origin.startswith("generated:"):
        print(f"generated a pseudonymisation key: {key.origin[10:]} (keep it secret)", file=say)
    command = _command_line(args)
    print(_quantity_line(args, options.quantity), file=say)
    if args.folder is not None:
        report = build_from_folder(args.folder, args.out, key, options, command=command)
    else:
        retrieve = _retrieve_dicomweb if args.dicomweb else _retrieve
        folders, source = retrieve(args, options.progress, say)
        report = build_from_folder(folders, args.out, key, options, command=command, source=source)
    rejected = sum(report.rejections.values())
    print(
        f"{args.out}: +{report.rows} rows ({report.labelled} labelled, {report.unlabelled} "
        f"unlabelled) from {report.instances_new} new instances; {report.instances_skipped} "
        f"already in the file; {rejected} rejected in {report.seconds:.1f} s",
        file=say,
    )
    for reason, count in sorted(report.rejections.items()):
        print(f"  rejected {reason}: {count}", file=say)
    if args.json:
        print(json.dumps({"file": str(args.out), **report.as_dict()}, indent=2, sort_keys=True))
    if report.rejections.get("no-scale"):
        print(_no_scale_error(report.rejections["no-scale"], options.quantity), file=sys.stderr)
        return 1
    return 0


def _quantity_line(args: argparse.Namespace, quantity: str | None) -> str:
    """Say which quantity the labels will be in, and why."""
    from training.dataset import DEFAULT_QUANTITY, ORGAN_QUANTITY, QUANTITY_UNITS

    if quantity is None:
        by_organ = ", ".join(f"{o}: {q}" for o, q in ORGAN_QUANTITY.items())
        return (
            f"labels: quantity by each instance's BodyPartExamined ({by_organ}; others: "
            f"{DEFAULT_QUANTITY}); --organ or --quantity sets one for all"
        )
    why = "--quantity" if args.quantity else f"the default for --organ {args.organ}"
    return f"labels: {quantity} in {QUANTITY_UNITS[quantity]} ({why})"


#: Typical colour bar ranges, only to illustrate ``--scale`` (scanners and presets differ).
_EXAMPLE_SCALE = {"youngs-modulus": "0 70", "shear-wave-speed": "0 10"}


def _no_scale_error(count: int, quantity: str | None) -> str:
    """Explain the ``no-scale`` rejections and how to avoid them."""
    from training.dataset import QUANTITY_UNITS

    if quantity:
        unit, example = QUANTITY_UNITS[quantity], f"e.g. --scale {_EXAMPLE_SCALE[quantity]}"
    else:
        unit, example = "kPa or m/s", "e.g. --scale 0 70 for kPa, --scale 0 10 for m/s"
    return (
        f"sswe-node dataset build: error: {count} dual SWE capture(s) rejected as no-scale: "
        f"the colour bar range of their elastograms is unknown, so they gave no labels (the "
        f"other rows were written). Build into a new dataset file (an existing file keeps its "
        f"first options) with --scale MIN MAX, the range the scanner's colour bar shows in "
        f"{unit} ({example})."
    )


def _query_filters(args: argparse.Namespace) -> QueryFilters:
    """Return the search filters the build options ask for."""
    from training.pacs import QueryFilters, read_patient_list

    return QueryFilters(
        modality=args.modality or None,
        date_from=args.date_from,
        date_to=args.date_to,
        station=args.station,
        manufacturer=args.manufacturer,
        patients=read_patient_list(args.patients) if args.patients else (),
    )


def _retrieved_folders(
    source: object, series: list[SeriesRef], report: RetrieveReport, cache: Path, say: Any
) -> list[Path]:
    """Say what a retrieval did; return the cache folders of the series that arrived."""
    from training.pacs import series_folder

    print(
        f"{source}: {len(series)} series; fetched {report.instances_fetched} instances, "
        f"{report.instances_cached} already in {cache}",
        file=say,
    )
    folders = [series_folder(cache, s.study_uid, s.series_uid) for s in series]
    return [f for f in folders if f.is_dir()]


def _retrieve(args: argparse.Namespace, progress: bool, say: Any) -> tuple[list[Path], str]:
    from training.pacs import PacsClient, PacsPeer

    peer = PacsPeer.parse(args.pacs)
    filters = _query_filters(args)
    cache = args.cache or Path(str(args.out) + ".cache")
    client = PacsClient(peer, args.calling_aet)
    series = client.find_series(filters)
    report = client.retrieve(
        series, cache, method=args.retrieve, move_aet=args.move_aet, move_port=args.move_port,
        move_bind=args.move_bind, parallel=args.parallel, progress=progress,
    )  # fmt: skip
    folders = _retrieved_folders(peer, series, report, cache, say)
    return folders, f"pacs:{peer} via C-{args.retrieve.upper()}"


def _retrieve_dicomweb(
    args: argparse.Namespace, progress: bool, say: Any
) -> tuple[list[Path], str]:
    from sswe_node.node.web_session import WebAuth
    from training.dicomweb_source import DicomwebSource

    auth = WebAuth(**{k: getattr(args, k) or "" for k in _WEB_AUTH})
    archive = DicomwebSource(args.dicomweb, auth)
    filters = _query_filters(args)
    cache = args.cache or Path(str(args.out) + ".cache")
    series = archive.find_series(filters)
    report = archive.retrieve(series, cache, parallel=args.parallel, progress=progress)
    folders = _retrieved_folders(archive, series, report, cache, say)
    return folders, f"dicomweb:{archive} via WADO-RS"


_WEB_AUTH = ("token_env", "token_file", "username", "password_env", "password_file",
             "client_certificate", "client_key", "ca_certificates")  # fmt: skip


def _command_line(args: argparse.Namespace) -> str:
    """Rebuild the build command from the parsed options (defaults spelled out)."""
    import shlex

    words = ["sswe-node", "dataset", "build", str(args.out)]
    skip = {"command", "dataset_command", "_run", "log_level", "out", "no_progress", "json"}
    if args.folder is not None:
        skip |= _PACS_ONLY
    elif getattr(args, "dicomweb", None):
        skip |= {"retrieve", "calling_aet", "move_aet", "move_port", "move_bind"}
    for name, value in vars(args).items():
        if name in skip or value is None or value is False:
            continue
        words.append("--" + name.replace("_", "-"))
        if name == "grid":
            words.append(f"{value[0]}x{value[1]}")
        elif isinstance(value, list | tuple):
            words.extend(str(v) for v in value)
        elif value is not True:
            words.append(str(value))
    return shlex.join(words)


def _info(args: argparse.Namespace) -> int:
    from training.datafile import dataset_summary

    if not args.file.is_file():
        print(f"sswe-node dataset info: {args.file}: no such file", file=sys.stderr)
        return 1
    try:
        summary = dataset_summary(args.file)
    except (OSError, ValueError) as exc:
        print(f"sswe-node dataset info: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    print(_format_summary(summary))
    return 0


def _format_summary(s: dict[str, Any]) -> str:
    manifest = s["manifest"]
    lines = [
        f"{s['file']}: {s['format']} v{s['version']}, grid {s['grid'][0]}x{s['grid'][1]}",
        f"  {manifest.get('notice', '')}",
        f"  rows {s['rows']}: {s['labelled']} labelled, {s['unlabelled']} unlabelled; "
        f"{s['patients']} patients (pseudonymised)",
    ]
    for title, key in (
        ("layout", "by_layout"), ("manufacturer", "by_manufacturer"),
        ("organ", "by_organ"), ("quantity", "by_quantity"),
    ):  # fmt: skip
        parts = ", ".join(f"{k or '-'}: {v}" for k, v in s[key].items())
        lines.append(f"  by {title}: {parts or '-'}")
    rejections = manifest.get("rejections", {})
    lines.append("  rejections: " + (", ".join(f"{k}: {v}" for k, v in rejections.items()) or "-"))
    options = manifest.get("options", {})
    if options:
        shown = dict(options, quantity=options.get("quantity") or "by-organ")
        lines.append("  options: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    for build in manifest.get("builds", []):
        lines.append(
            f"  build {build.get('started', '?')}: +{build.get('rows', 0)} rows from "
            f"{build.get('instances_new', 0)} new instances ({build.get('source', '')})"
        )
        if build.get("command"):
            lines.append(f"    {build['command']}")
    return "\n".join(lines)

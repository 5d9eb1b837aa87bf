"""`sswe-node simulate`: write a simulated phantom ultrasound DICOM archive with ground truth."""

from __future__ import annotations

import argparse
import logging
import sys

HELP = (
    "write a simulated phantom ultrasound DICOM archive (dual SWE captures, full-screen and "
    "second-scanner B-mode) with ground truth; synthetic data, not for diagnosis"
)

logger = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""
    parser.add_argument("--patients", type=int, default=3, help="number of patients (default 3)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; output is reproducible")
    parser.add_argument(
        "--organ",
        choices=("prostate", "thyroid"),
        default="prostate",
        help="prostate: Young's modulus in kPa, scale 0-70; thyroid: shear-wave speed in m/s, "
        "scale 0-10 (default prostate)",
    )
    parser.add_argument(
        "--engine",
        choices=("fast", "pymust"),
        default="fast",
        help="B-mode engine: fast PSF convolution, or pymust SIMUS (seconds per image)",
    )
    parser.add_argument(
        "--images-per-patient",
        type=int,
        default=None,
        help="image planes per patient (default 3-5 at random); each plane gives a dual capture, "
        "a full-screen B-mode and a second-scanner B-mode",
    )
    parser.add_argument(
        "--opacity", type=float, default=0.8, help="elastogram opacity over the B-mode (0-1]"
    )
    parser.add_argument(
        "--arrangement",
        choices=("mixed", "left-right", "top-bottom"),
        default="mixed",
        help="dual display panels side by side, stacked, or alternating (default mixed)",
    )
    parser.add_argument(
        "--jpeg", action="store_true", help="JPEG baseline compress RGB instances (YBR_FULL_422)"
    )
    parser.add_argument(
        "--no-other-scanner",
        action="store_true",
        help="do not render the planes with the second scanner (no SWE)",
    )
    parser.add_argument(
        "--variability",
        choices=("full", "none"),
        default="full",
        help="full (default): per acquisition, draw the scanner profile's settings (centre "
        "frequency and bandwidth -> PSF size, f-number, transmit focus depth, gain, dynamic "
        "range, TGC slope and six TGC sliders, noise floor, speckle density, zoom/pixel "
        "spacing, probe pressure) and the SWE artefacts (noise, penetration, noisy low-"
        "confidence edges, box-edge bias, precompression under the probe, shadow voids); per "
        "patient, the stiffness-echogenicity slope and the gland's echogenicity, per lesion "
        "hypo/iso/hyperechoic (62/32/6 %% prostate, 55/30/15 %% thyroid); all recorded in "
        "archive.json. Geometry: SWE dual panel linear (plane-wave B-mode), full-screen "
        "B-mode-only protocol convex and focused at the gland with more probe pressure, "
        "second scanner endocavity (prostate; linear for the thyroid). none: nominal "
        "settings, linear images, no draws (see docs/simulator.md)",
    )
    parser.add_argument(
        "--qse",
        action="store_true",
        help="also write the second scanner's quasi-static strain elastography capture of "
        "every plane (kind 'strain': dual B-mode/strain screen, bar labelled SOFT/HARD, "
        "Soft/Hard, S/H or +/-, no kPa scale; operator-dependent stress decay, smoothing, "
        "noise and contrast drawn per acquisition); readers refuse it as strain, never decoded "
        "as SWE",
    )
    parser.add_argument(
        "--scales",
        choices=("fixed", "random"),
        default="fixed",
        help="colour-bar range of dual captures: the organ's (default; 0-70 kPa, 0-10 m/s) or "
        "drawn per acquisition (kPa: 40, 70, 90, 180, 300; m/s: 5, 7, 10), burned in beside "
        "the bar ('180 kPa', '0') as scanners do",
    )
    parser.add_argument(
        "--annotations",
        action="store_true",
        help="burn an operator's measurement marks into dual captures: Q-Box rings, calipers, "
        "crosses and a result text (recorded in archive.json)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes simulating patients in parallel"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Write the archive and print a one-line summary."""
    from training.simulate.archive import write_archive

    try:
        summary = write_archive(
            args.out,
            patients=args.patients,
            seed=args.seed,
            organ=args.organ,
            engine=args.engine,
            images_per_patient=args.images_per_patient,
            opacity=args.opacity,
            arrangement=args.arrangement,
            jpeg=args.jpeg,
            other_scanner=not args.no_other_scanner,
            progress=not args.no_progress,
            workers=args.workers,
            variability=args.variability,
            qse=args.qse,
            scales=args.scales,
            annotations=args.annotations,
        )
    except ValueError as exc:  # an option value write_archive refuses: a usage error
        print(f"sswe-node simulate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a non-empty --out folder: a runtime failure
        print(f"sswe-node simulate: error: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0

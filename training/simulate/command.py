"""`sswe-node simulate`: not built yet (issue 2)."""

from __future__ import annotations

import argparse
import sys

HELP = "write a simulated phantom ultrasound DICOM archive with ground truth (not built yet: issue 2)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""


def run(args: argparse.Namespace) -> int:
    """Say plainly that this sub-command is not built yet."""
    print("sswe-node simulate: not built yet (issue 2)", file=sys.stderr)
    return 2

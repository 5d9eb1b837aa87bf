"""`sswe-node dataset`: not built yet (issue 6)."""

from __future__ import annotations

import argparse
import sys

HELP = "build or inspect a training dataset from a DICOM folder or PACS (not built yet: issue 6)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""


def run(args: argparse.Namespace) -> int:
    """Say plainly that this sub-command is not built yet."""
    print("sswe-node dataset: not built yet (issue 6)", file=sys.stderr)
    return 2

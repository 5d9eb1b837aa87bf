"""`sswe-node echo`: not built yet (issue 5)."""

from __future__ import annotations

import argparse
import sys

HELP = "C-ECHO a DICOM peer given as AE@HOST:PORT (not built yet: issue 5)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""


def run(args: argparse.Namespace) -> int:
    """Say plainly that this sub-command is not built yet."""
    print("sswe-node echo: not built yet (issue 5)", file=sys.stderr)
    return 2

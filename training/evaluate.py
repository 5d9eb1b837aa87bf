"""`sswe-node evaluate`: not built yet (issue 4)."""

from __future__ import annotations

import argparse
import sys

HELP = "evaluate a packaged model per patient on a dataset file (not built yet: issue 4)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""


def run(args: argparse.Namespace) -> int:
    """Say plainly that this sub-command is not built yet."""
    print("sswe-node evaluate: not built yet (issue 4)", file=sys.stderr)
    return 2

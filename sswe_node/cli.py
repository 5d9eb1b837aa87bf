"""The ``sswe-node`` command line: a thin dispatcher over sub-command modules.

Sub-commands are found through the ``sswe_node.commands`` entry-point group (see
``pyproject.toml``), so the node itself never imports the training toolkit. A sub-command
module provides ``HELP`` (one line), ``configure_parser(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import ModuleType

from sswe_node import __version__
from sswe_node.errors import SsweError

ENTRY_POINT_GROUP = "sswe_node.commands"
COMMAND_ORDER = ("serve", "convert", "echo", "cases", "simulate", "dataset", "train", "evaluate")


def _command_modules() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    ordered = {name: found[name] for name in COMMAND_ORDER if name in found}
    ordered.update({name: value for name, value in sorted(found.items()) if name not in ordered})
    return ordered


def _load(module_name: str) -> ModuleType:
    return importlib.import_module(module_name)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser.

    Parameters
    ----------
    selected : str, optional
        The sub-command about to run: only its module is imported (the others' help is not
        shown then). Without one, every module is imported for the top-level help.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="sswe-node",
        description="Synthetic shear-wave elastography for DICOM networks (research use only).",
    )
    parser.add_argument("--version", action="version", version=f"sswe-node {__version__}")
    parser.add_argument("--log-level", default=None, help="log level (DEBUG, INFO, WARNING, ERROR)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in _command_modules().items():
        if selected is not None and name != selected:
            # Importing every module (pynetdicom, SQLAlchemy, h5py, SciPy...) only for help
            # text that is not printed would cost each command about a second at start-up.
            sub.add_parser(name).set_defaults(_run=None)
            continue
        module = _load(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        if name == selected:
            module.configure_parser(cmd)
            cmd.set_defaults(_run=module.run)
        else:
            cmd.set_defaults(_run=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sswe-node`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _command_modules()
    # The first command named, unless the top-level help comes first (it lists every command).
    selected = next((a for a in argv if a in commands or a in ("-h", "--help")), None)
    if selected not in commands:
        selected = None
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = (args.log_level or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args._run(args) or 0)
    except SsweError as exc:
        print(f"sswe-node {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `sswe-node cases | head`): stop quietly, like other tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

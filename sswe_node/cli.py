"""The ``sswe-node`` command line: a thin dispatcher over sub-command modules.

Sub-commands are found through the ``sswe_node.commands`` entry-point group (see
``pyproject.toml``), so the node itself never imports the training toolkit. A sub-command
module provides ``HELP`` (one line), ``configure_parser(parser)`` and ``run(args) -> int``.

Habits every sub-command shares (as dcmtk's and pynetdicom's tools do):

- exit status 0 on success, 1 on a runtime failure, 2 on a usage error (argparse's);
- ``-v``/``--verbose``, ``-q``/``--quiet`` and ``--log-level LEVEL`` before or after the
  sub-command; TensorFlow's start-up lines (``cpu_feature_guard``, oneDNN, absl) are silenced
  unless the level is DEBUG;
- progress bars only when standard error is a terminal, and never with ``--no-progress``;
- AE options spelled ``--aet`` (ours), ``--aec`` (theirs), ``--aem`` (C-MOVE destination), see
  :mod:`sswe_node.aetitle`.
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
from sswe_node.quiet import quiet_libraries
from sswe_node.tf_chatter import silence as silence_tensorflow

ENTRY_POINT_GROUP = "sswe_node.commands"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
COMMAND_ORDER = (
    "serve",
    "convert",
    "echo",
    "cases",
    "simulate",
    "dataset",
    "train",
    "evaluate",
    "model",
)


def _command_modules() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    ordered = {name: found[name] for name in COMMAND_ORDER if name in found}
    ordered.update({name: value for name, value in sorted(found.items()) if name not in ordered})
    return ordered


def _load(module_name: str) -> ModuleType:
    return importlib.import_module(module_name)


def _add_logging_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v``/``-q``/``--log-level``; after the sub-command they override the ones before it."""
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("logging")
    options: list[tuple[tuple[str, ...], dict[str, object]]] = [
        (("-v", "--verbose"), {"action": "count", "help": "more log lines (DEBUG)"}),
        (("-q", "--quiet"), {"action": "count", "help": "fewer log lines (-q WARNING, -qq ERROR)"}),
        (
            ("--log-level",),
            {
                "type": str.upper,
                "choices": LOG_LEVELS,
                "metavar": "LEVEL",
                "help": "log level: " + ", ".join(LOG_LEVELS),
            },
        ),
    ]
    for flags, kwargs in options:
        # A sub-command's own option of the same spelling wins (argparse refuses a second one).
        free = tuple(f for f in flags if f not in parser._option_string_actions)
        if free:
            group.add_argument(*free, default=default, **kwargs)  # type: ignore[arg-type]


def log_level(args: argparse.Namespace) -> str | None:
    """Return the level asked for on the command line (``None``: the command's default).

    ``--log-level`` wins; otherwise each ``-v`` is one level more verbose than INFO and each
    ``-q`` one level quieter.
    """
    if getattr(args, "log_level", None):
        return str(args.log_level).upper()
    steps = (getattr(args, "quiet", None) or 0) - (getattr(args, "verbose", None) or 0)
    if steps == 0:
        return None
    index = LOG_LEVELS.index("INFO") + steps
    return LOG_LEVELS[min(max(index, 0), len(LOG_LEVELS) - 1)]


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
    _add_logging_options(parser, top=True)
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
            for command_parser in _with_nested(cmd):
                _add_logging_options(command_parser, top=False)
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
    args.log_level = log_level(args)
    for name in ("verbose", "quiet"):  # folded into log_level
        if hasattr(args, name):
            delattr(args, name)
    level = args.log_level or "INFO"
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    silence_tensorflow(level)  # before any TensorFlow import, here or in worker processes
    quiet_libraries(level)  # pynetdicom's identifier dumps, decoders' tracebacks
    if getattr(args, "no_progress", None) is False and not _is_terminal(sys.stderr):
        args.no_progress = True  # a bar in a log file or a pipe is only noise
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


def _with_nested(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Return the parser and those of its own sub-commands (``dataset build``, ``dataset info``)."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in dict.fromkeys(action.choices.values()):
                found.extend(_with_nested(nested))
    return found


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

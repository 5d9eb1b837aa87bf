"""`sswe-node cases`: list and filter the cases of the case store (a table, or JSON)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from typing import Any

from sswe_node.config import load_settings
from sswe_node.errors import ConfigError
from sswe_node.node.schema import CASE_STATUSES
from sswe_node.node.store import CaseStore

HELP = "list and filter cases in the case store"

_COLUMNS = (
    ("id", 5),
    ("status", 10),
    ("reason", 18),
    ("layout", 8),
    ("frames", 6),
    ("outputs", 7),
    ("sent", 5),
    ("queued", 6),
    ("failed", 6),
    ("calling_ae", 16),
    ("called_ae", 16),
    ("model_name", 14),
    ("warnings", 24),
    ("received_at", 24),
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""
    parser.add_argument("--config", default=None, help="node configuration file (TOML)")
    parser.add_argument("--database", default=None, help="case store URL (node.database_url)")
    parser.add_argument("--status", choices=CASE_STATUSES, default=None, help="only this status")
    parser.add_argument("--reason", default=None, help="only this reason code")
    parser.add_argument("--calling-ae", default=None, help="only cases from this calling AE")
    parser.add_argument(
        "--since", default=None, help="only cases received since this ISO time (UTC)"
    )
    parser.add_argument("--limit", type=int, default=100, help="at most N cases (0: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--sends", action="store_true",
        help="list the sends (destination, URL, status, attempts, last error) instead",
    )  # fmt: skip


def _parse_since(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r} is not an ISO date/time") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def format_table(cases: list[dict[str, Any]]) -> str:
    """Return the cases as a fixed-width text table (no patient identifiers)."""
    header = " ".join(name.upper().ljust(width) for name, width in _COLUMNS)
    lines = [header.rstrip()]
    for case in cases:
        row = dict(case)
        row["sent"] = case["sends"]["sent"]
        row["queued"] = case["sends"]["queued"]
        row["failed"] = case["sends"]["failed"]
        cells = []
        for name, width in _COLUMNS:
            value = row.get(name)
            if isinstance(value, list):  # warnings: comma-separated codes
                value = ",".join(value)
            text = "-" if value in (None, "") else str(value)
            cells.append(text[:width].ljust(width))
        lines.append(" ".join(cells).rstrip())
        if case["status"] in ("failed", "skipped") and case["message"]:
            lines.append(f"      {case['message']}")
    return "\n".join(lines)


def format_sends(sends: list[dict[str, Any]]) -> str:
    """Return the sends as a text table: case, destination, status, attempts, last error."""
    lines = ["CASE  DESTINATION      STATUS  TRIES  LAST ERROR"]
    for send in sends:
        lines.append(
            f"{send['case_id']:<5} {send['destination'][:16]:<16} {send['status']:<7} "
            f"{send['attempts']:<6} {send['last_error'] or '-'}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the matching cases."""
    settings = load_settings(args.config, overrides={"node.database_url": args.database})
    store = CaseStore(settings.node.database_url)
    if getattr(args, "sends", False):
        try:
            sends = store.list_sends()
        finally:
            store.close()
        if args.status:
            sends = [s for s in sends if s["status"] == args.status]
        return _show(sends, args.json, format_sends)
    try:
        cases = store.list_cases(
            status=args.status,
            reason=args.reason,
            calling_ae=args.calling_ae,
            since=_parse_since(args.since),
            limit=args.limit or None,
        )
    finally:
        store.close()
    return _show(cases, args.json, format_table)


def _show(
    rows: list[dict[str, Any]], as_json: bool, table: Callable[[list[dict[str, Any]]], str]
) -> int:
    """Print rows as indented JSON, or as the text ``table`` makes of them; return 0."""
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(rows))
    return 0

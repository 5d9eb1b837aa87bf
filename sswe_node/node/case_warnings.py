"""Case warnings (e.g. ``out-of-distribution``): whether outputs are sent, and their counts.

Workers may run in their own processes, whose counters the serving process never sees, so the
``/metrics`` count is read from the case rows themselves (like the queue depths).
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from sswe_node.config import Settings
from sswe_node.node.records import CaseOutcome
from sswe_node.node.schema import DONE, Case

__all__ = ["OUT_OF_DISTRIBUTION", "sendable", "warning_counts"]

#: The warning of a case whose image is unlike the model's training data.
OUT_OF_DISTRIBUTION = "out-of-distribution"


def sendable(outcome: CaseOutcome, settings: Settings) -> bool:
    """Whether a case's outputs are sent: done, and not held back as out of distribution.

    With ``processing.send_out_of_distribution = false`` the outputs of a case warned
    ``out-of-distribution`` are written and recorded but stay in the node's storage.
    """
    if outcome.status != DONE:
        return False
    held = not settings.processing.send_out_of_distribution
    return not (held and OUT_OF_DISTRIBUTION in outcome.warnings)


def warning_counts(store: object) -> dict[str, float]:
    """Return ``{warning code: cases carrying it}`` over every case of the store."""
    session_factory = getattr(store, "session", None)
    if session_factory is None:
        return {}
    with session_factory() as session:
        rows = session.scalars(select(Case.warnings).where(Case.warnings != "")).all()
    counts: Counter[str] = Counter()
    for text in rows:
        counts.update(code for code in str(text).split(",") if code)
    return {code: float(n) for code, n in sorted(counts.items())}

"""Counts of case warnings (e.g. ``out-of-distribution``) from the case store, for ``/metrics``.

Workers may run in their own processes, whose counters the serving process never sees, so the
count is read from the case rows themselves (like the queue depths).
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from sswe_node.node.schema import Case

__all__ = ["warning_counts"]


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

"""DIMSE status codes the node returns, by name."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """C-STORE / C-ECHO status codes used at the network boundary (PS3.4 Annex B)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    CANNOT_UNDERSTAND_UIDS = 0xC210


# A-ASSOCIATE-RJ (result, source, diagnostic) triples (PS3.8 9.3.4).
REJECT_NO_REASON = (0x01, 0x01, 0x01)
"""Rejected permanent, by the service user: no reason given (used for unknown peer addresses)."""
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
"""Rejected permanent, by the service user: calling AE title not recognised."""
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)
"""Rejected transient, by the service provider (presentation): local limit exceeded."""

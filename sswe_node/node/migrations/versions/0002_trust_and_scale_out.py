"""Round 2: content hash, warnings, scale, OOD score, called AE, leases, STOW URL, scanner stats.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _case_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("called_ae", sa.String(16), nullable=False, server_default=""),
        sa.Column("content_sha256", sa.String(64)),
        sa.Column("warnings", sa.Text, nullable=False, server_default=""),
        sa.Column("scale_min", sa.Float),
        sa.Column("scale_max", sa.Float),
        sa.Column("scale_unit", sa.String(16)),
        sa.Column("scale_source", sa.String(32)),
        sa.Column("ood_score", sa.Float),
        sa.Column("owner", sa.String(255)),
        sa.Column("lease_expires_at", sa.DateTime),
    )


def _send_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("url", sa.Text, nullable=False, server_default=""),
        sa.Column("claimed_by", sa.String(255)),
        sa.Column("lease_expires_at", sa.DateTime),
    )


def upgrade() -> None:
    """Add the columns and the scanner statistics table; UID unique only with its content."""
    with op.batch_alter_table("cases") as batch:
        for column in _case_columns():
            batch.add_column(column)
        batch.drop_index("ix_cases_sop_instance_uid")
        batch.create_index("ix_cases_sop_instance_uid", ["sop_instance_uid"])
        batch.create_index(
            "uq_cases_uid_content", ["sop_instance_uid", "content_sha256"], unique=True
        )
    with op.batch_alter_table("sends") as batch:
        for column in _send_columns():
            batch.add_column(column)
    op.create_table(
        "scanner_stats",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("scanner", sa.String(130), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("mean", sa.Text, nullable=False),
        sa.Column("m2", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("model_name", "scanner"),
    )


def downgrade() -> None:
    """Remove what :func:`upgrade` added (a UID conflict's second row must be gone first)."""
    op.drop_table("scanner_stats")
    with op.batch_alter_table("sends") as batch:
        for column in _send_columns():
            batch.drop_column(column.name)
    with op.batch_alter_table("cases") as batch:
        batch.drop_index("uq_cases_uid_content")
        batch.drop_index("ix_cases_sop_instance_uid")
        batch.create_index("ix_cases_sop_instance_uid", ["sop_instance_uid"], unique=True)
        for column in _case_columns():
            batch.drop_column(column.name)

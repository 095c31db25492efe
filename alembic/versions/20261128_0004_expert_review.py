"""expert review: review requests, verdict audit trail, label versions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _org_and_trace(table: str) -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f(f"fk_{table}_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["trace_id"], ["traces.id"], name=op.f(f"fk_{table}_trace_id_traces"), ondelete="CASCADE"
        ),
    ]


def upgrade() -> None:
    op.add_column(
        "expert_labels", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    op.create_table(
        "review_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("trace_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("risk_level", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        *_org_and_trace("review_requests"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_requests")),
        sa.UniqueConstraint("trace_id", "version", name=op.f("uq_review_requests_trace_id_version")),
    )
    op.create_index(
        "ix_review_requests_pending",
        "review_requests",
        ["organization_id", "created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "verdict_changes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("trace_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_passed", sa.Boolean(), nullable=True),
        sa.Column("from_severity", sa.String(length=16), nullable=True),
        sa.Column("from_decided_by", sa.String(length=32), nullable=True),
        sa.Column("to_passed", sa.Boolean(), nullable=False),
        sa.Column("to_severity", sa.String(length=16), nullable=False),
        sa.Column("to_decided_by", sa.String(length=32), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("label_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        *_org_and_trace("verdict_changes"),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["expert_labels.id"],
            name=op.f("fk_verdict_changes_label_id_expert_labels"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdict_changes")),
    )
    op.create_index(
        op.f("ix_verdict_changes_trace_id_created_at"), "verdict_changes", ["trace_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_verdict_changes_trace_id_created_at"), table_name="verdict_changes")
    op.drop_table("verdict_changes")
    op.drop_index("ix_review_requests_pending", table_name="review_requests")
    op.drop_table("review_requests")
    op.drop_column("expert_labels", "version")

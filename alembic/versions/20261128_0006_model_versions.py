"""model versions: Tier 2 classifiers per organisation and domain

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 20:15:00

Replaces the initial schema's placeholder table of the same name.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The initial schema's placeholder (never written to) gives way to the
    # registry of trained models.
    op.drop_table("model_versions")
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("training_size", sa.Integer(), nullable=False),
        sa.Column("expert_labels", sa.Integer(), nullable=False),
        sa.Column("judge_verdicts", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("baseline_metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("compared_with", sa.Uuid(), nullable=True),
        sa.Column("artefact", sa.LargeBinary(), nullable=False),
        sa.Column("artefact_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('candidate', 'promoted', 'kept', 'retired')", name=op.f("ck_model_versions_status")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_model_versions_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["compared_with"],
            ["model_versions.id"],
            name=op.f("fk_model_versions_compared_with_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint(
            "organization_id", "domain", "version", name=op.f("uq_model_versions_organization_id_domain_version")
        ),
    )
    op.create_index(
        "uq_model_versions_promoted",
        "model_versions",
        ["organization_id", "domain"],
        unique=True,
        postgresql_where=sa.text("status = 'promoted'"),
    )


def downgrade() -> None:
    op.drop_index("uq_model_versions_promoted", table_name="model_versions")
    op.drop_table("model_versions")
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.String(length=64), nullable=False),
        sa.Column("artifact", sa.LargeBinary(), nullable=True),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_model_versions_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint(
            "organization_id", "domain", "version", name=op.f("uq_model_versions_organization_id_domain_version")
        ),
    )

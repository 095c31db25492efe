"""domain packs and pack version of evaluations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 11:35:14.399879
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "domain_packs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_domain_packs_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_packs")),
        sa.UniqueConstraint(
            "organization_id", "name", "version", name=op.f("uq_domain_packs_organization_id_name_version")
        ),
    )
    op.add_column("evaluation_results", sa.Column("pack_name", sa.String(length=64), nullable=True))
    op.add_column("evaluation_results", sa.Column("pack_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("evaluation_results", "pack_version")
    op.drop_column("evaluation_results", "pack_name")
    op.drop_table("domain_packs")

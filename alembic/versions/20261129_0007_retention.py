"""retention: organisations may have their traces deleted after N days

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("organizations", sa.Column("retention_days", sa.Integer(), nullable=True))
    op.create_check_constraint(
        "ck_organizations_retention_days_positive", "organizations", "retention_days IS NULL OR retention_days >= 1"
    )


def downgrade() -> None:
    op.drop_constraint("ck_organizations_retention_days_positive", "organizations", type_="check")
    op.drop_column("organizations", "retention_days")

"""trace search: each trace's words as a stored tsvector, with a GIN index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 02:05:00

Adding a stored generated column rewrites the traces table: on a large
deployment, run this migration in a maintenance window.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As models.tables.SEARCH_DOCUMENT (a migration keeps its own copy: the model may change later).
SEARCH_DOCUMENT = "to_tsvector('simple'::regconfig, (left(input, 100000) || ' '::text) || left(output, 100000))"


def upgrade() -> None:
    op.add_column(
        "traces",
        sa.Column("search_document", postgresql.TSVECTOR(), sa.Computed(SEARCH_DOCUMENT, persisted=True)),
    )
    op.create_index("ix_traces_search_document", "traces", ["search_document"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_traces_search_document", table_name="traces")
    op.drop_column("traces", "search_document")

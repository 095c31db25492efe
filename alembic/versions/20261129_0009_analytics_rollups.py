"""analytics rollups: hourly counts of current verdicts and of their issues

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 03:20:00

Filled here from the evaluations already stored; from then on the
activities that store or change a verdict keep them (core.analytics).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As core.analytics.REBUILD_* without the organisation filter (a migration
# keeps its own copy: the module may change later).
BACKFILL_VERDICTS = """
INSERT INTO verdict_rollups (organization_id, hour, domain, model, decided_by, severity, passed, evaluations)
SELECT r.organization_id, date_trunc('hour', t.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       r.domain, t.model, r.decided_by, r.severity, r.passed, count(*)
FROM evaluation_results AS r JOIN traces AS t ON t.id = r.trace_id
WHERE r.current
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""
BACKFILL_ISSUES = """
INSERT INTO issue_rollups (organization_id, hour, domain, model, tier, category, severity, rule_id, issues)
SELECT r.organization_id, date_trunc('hour', t.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       r.domain, t.model, i.tier, i.category, i.severity, i.rule_id, count(*)
FROM evaluation_results AS r
JOIN traces AS t ON t.id = r.trace_id
JOIN evaluation_issues AS i ON i.trace_id = r.trace_id AND i.version = r.version
WHERE r.current
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
"""


def upgrade() -> None:
    op.create_table(
        "verdict_rollups",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("decided_by", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("evaluations", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_verdict_rollups_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id",
            "hour",
            "domain",
            "model",
            "decided_by",
            "severity",
            "passed",
            name="pk_verdict_rollups",
        ),
    )
    op.create_table(
        "issue_rollups",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("issues", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_issue_rollups_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id",
            "hour",
            "domain",
            "model",
            "tier",
            "category",
            "severity",
            "rule_id",
            name="pk_issue_rollups",
        ),
    )
    op.execute(BACKFILL_VERDICTS)
    op.execute(BACKFILL_ISSUES)


def downgrade() -> None:
    op.drop_table("issue_rollups")
    op.drop_table("verdict_rollups")

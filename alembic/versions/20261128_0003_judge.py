"""LLM judge: configs, calls, rate buckets, limits; versioned evaluations; hourly usage

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = ("pending_dispatch", "queued", "evaluating", "awaiting_review", "completed", "failed")
NEW_STATUSES = (*OLD_STATUSES[:3], "retrying", *OLD_STATUSES[3:])


def _status_check(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["organization_id"],
        ["organizations.id"],
        name=op.f(f"fk_{table}_organization_id_organizations"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    # --- traces: a "retrying" status and the wanted evaluation version --------
    op.drop_constraint(op.f("ck_traces_status"), "traces", type_="check")
    op.create_check_constraint(op.f("ck_traces_status"), "traces", _status_check(NEW_STATUSES))
    op.add_column(
        "traces", sa.Column("evaluation_version", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )

    # --- organisations: judge limits ----------------------------------------------
    op.add_column(
        "organizations", sa.Column("judge_monthly_budget_usd", sa.Numeric(14, 4), nullable=True)
    )
    op.add_column("organizations", sa.Column("judge_calls_per_minute", sa.Integer(), nullable=True))

    # --- evaluation results and issues: one per (trace, version) ------------------
    op.add_column(
        "evaluation_results",
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )
    op.add_column(
        "evaluation_results",
        sa.Column("current", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    op.drop_constraint("uq_evaluation_results_trace_id", "evaluation_results", type_="unique")
    op.create_unique_constraint(
        op.f("uq_evaluation_results_trace_id_version"), "evaluation_results", ["trace_id", "version"]
    )
    op.create_index(
        "uq_evaluation_results_current",
        "evaluation_results",
        ["trace_id"],
        unique=True,
        postgresql_where=sa.text("current"),
    )
    op.add_column(
        "evaluation_issues",
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )
    op.drop_constraint("uq_evaluation_issues_trace_id_tier_ordinal", "evaluation_issues", type_="unique")
    op.create_unique_constraint(
        op.f("uq_evaluation_issues_trace_id_version_tier_ordinal"),
        "evaluation_issues",
        ["trace_id", "version", "tier", "ordinal"],
    )

    # --- usage: daily named counters become hourly counters per domain and tier ---
    op.add_column("usage_metrics", sa.Column("hour", sa.DateTime(timezone=True), nullable=True))
    op.add_column("usage_metrics", sa.Column("domain", sa.String(length=64), nullable=True))
    op.add_column("usage_metrics", sa.Column("tier", sa.String(length=32), nullable=True))
    for column in ("evaluations", "calls", "input_tokens", "output_tokens"):
        op.add_column(
            "usage_metrics",
            sa.Column(column, sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        )
    op.add_column(
        "usage_metrics",
        sa.Column("cost_usd", sa.Numeric(16, 6), server_default=sa.text("0"), nullable=False),
    )
    # Earlier rows counted evaluated traces per day without domain or tier.
    op.execute(
        "UPDATE usage_metrics SET hour = day::timestamp AT TIME ZONE 'UTC', domain = 'unknown', tier = 'unknown', "
        "evaluations = CASE WHEN metric = 'traces_evaluated' THEN value ELSE 0 END"
    )
    op.drop_constraint("uq_usage_metrics_organization_id_day_metric", "usage_metrics", type_="unique")
    for column in ("day", "metric", "value"):
        op.drop_column("usage_metrics", column)
    for column in ("hour", "domain", "tier"):
        op.alter_column("usage_metrics", column, nullable=False)
    op.create_unique_constraint(
        op.f("uq_usage_metrics_organization_id_hour_domain_tier"),
        "usage_metrics",
        ["organization_id", "hour", "domain", "tier"],
    )

    # --- judge tables -------------------------------------------------------------------
    op.create_table(
        "judge_configs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("settings", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("api_key_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("api_key_hint", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        _org_fk("judge_configs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judge_configs")),
        sa.UniqueConstraint(
            "organization_id", "domain", name=op.f("uq_judge_configs_organization_id_domain")
        ),
    )
    op.create_table(
        "judge_calls",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("trace_id", sa.Uuid(), nullable=False),
        sa.Column("evaluation_version", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("prompt", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("exchanges", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("verdict", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(16, 6), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        _org_fk("judge_calls"),
        sa.ForeignKeyConstraint(
            ["trace_id"], ["traces.id"], name=op.f("fk_judge_calls_trace_id_traces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judge_calls")),
        sa.UniqueConstraint(
            "trace_id",
            "evaluation_version",
            "attempt",
            name=op.f("uq_judge_calls_trace_id_evaluation_version_attempt"),
        ),
    )
    op.create_table(
        "judge_rate_buckets",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _org_fk("judge_rate_buckets"),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_judge_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("judge_rate_buckets")
    op.drop_table("judge_calls")
    op.drop_table("judge_configs")

    op.drop_constraint(
        op.f("uq_usage_metrics_organization_id_hour_domain_tier"), "usage_metrics", type_="unique"
    )
    op.add_column("usage_metrics", sa.Column("day", sa.Date(), nullable=True))
    op.add_column("usage_metrics", sa.Column("metric", sa.String(length=64), nullable=True))
    op.add_column("usage_metrics", sa.Column("value", sa.BigInteger(), nullable=True))
    # Daily evaluation counts survive (summed into one row per organisation
    # and UTC day); per-tier spend has no place in the old shape.
    op.execute(
        "WITH totals AS ("
        "  SELECT organization_id, (hour AT TIME ZONE 'UTC')::date AS day, sum(evaluations) AS total,"
        "         min(id::text)::uuid AS keep"
        "  FROM usage_metrics GROUP BY 1, 2) "
        "UPDATE usage_metrics u SET day = t.day, metric = 'traces_evaluated', value = t.total "
        "FROM totals t WHERE u.id = t.keep"
    )
    op.execute("DELETE FROM usage_metrics WHERE day IS NULL")
    for column in ("day", "metric", "value"):
        op.alter_column("usage_metrics", column, nullable=False)
    for column in ("hour", "domain", "tier", "evaluations", "calls", "input_tokens", "output_tokens", "cost_usd"):
        op.drop_column("usage_metrics", column)
    op.create_unique_constraint(
        "uq_usage_metrics_organization_id_day_metric", "usage_metrics", ["organization_id", "day", "metric"]
    )

    op.drop_constraint(
        op.f("uq_evaluation_issues_trace_id_version_tier_ordinal"), "evaluation_issues", type_="unique"
    )
    # The old shape keeps one result per trace, the current one, and its issues.
    op.execute(
        "DELETE FROM evaluation_issues i WHERE NOT EXISTS ("
        "SELECT 1 FROM evaluation_results r "
        "WHERE r.trace_id = i.trace_id AND r.version = i.version AND r.current)"
    )
    op.create_unique_constraint(
        "uq_evaluation_issues_trace_id_tier_ordinal", "evaluation_issues", ["trace_id", "tier", "ordinal"]
    )
    op.drop_column("evaluation_issues", "version")
    op.drop_index("uq_evaluation_results_current", table_name="evaluation_results")
    op.drop_constraint(op.f("uq_evaluation_results_trace_id_version"), "evaluation_results", type_="unique")
    op.execute("DELETE FROM evaluation_results WHERE NOT current")
    op.create_unique_constraint("uq_evaluation_results_trace_id", "evaluation_results", ["trace_id"])
    op.drop_column("evaluation_results", "current")
    op.drop_column("evaluation_results", "version")

    op.drop_column("organizations", "judge_calls_per_minute")
    op.drop_column("organizations", "judge_monthly_budget_usd")
    op.drop_column("traces", "evaluation_version")
    op.execute("UPDATE traces SET status = 'evaluating' WHERE status = 'retrying'")
    op.drop_constraint(op.f("ck_traces_status"), "traces", type_="check")
    op.create_check_constraint(op.f("ck_traces_status"), "traces", _status_check(OLD_STATUSES))

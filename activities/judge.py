"""Tier 3 activity: one attempt at judging a trace with an LLM.

Runs on the judge task queue. Each attempt is recorded in ``judge_calls``
(prompt, raw responses, verdict, tokens, cost, latency, error) and counted
in ``usage_metrics`` before the activity returns or fails, so spend is
never lost, even for failed calls. The activity itself never retries: it
fails with a :class:`JudgeFailure` in the error details and the workflow
decides when to try again (honouring Retry-After) — which is what lets the
workflow show a trace as "retrying", with the attempt count and last error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import Row, String, any_, bindparam, literal_column, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import trace_not_found
from activities.tiers import LOAD_TRACE_TEXT, TraceText, normalise
from core import metrics
from core.db import autocommit_sessions, in_transaction
from core.judges import (
    JUDGE_TIER,
    ResolvedJudge,
    add_usage,
    month_to_date_spend,
    resolve_judge,
    take_rate_token,
)
from core.packs import PackResolver
from core.secrets import SecretKeyMissing
from core.settings import Settings
from evaluators.escalation import JUDGE
from evaluators.judge.config import JudgeConfig, call_cost_usd
from evaluators.judge.errors import JudgeProviderError
from evaluators.judge.prompt import JudgePrompt, build_prompt, rubric_ids
from evaluators.judge.providers import Judge, make_judge
from evaluators.judge.run import JudgeExchange, JudgeOutcome, run_judge
from evaluators.types import Finding
from models.schemas import JudgeFailure, JudgeInput, TierOutcome, TraceStatus
from models.tables import JudgeCall, Organization, Trace

JUDGE_FAILED = "JudgeCallFailed"
HEARTBEAT_SECONDS = 5.0

ORGANIZATIONS = Organization.__table__
TRACES = Trace.__table__
JUDGE_CALLS = JudgeCall.__table__

# The statements of every attempt, built once and executed with parameters
# (see core.db on prepared statements).
_JUDGE_LIMITS = select(
    ORGANIZATIONS.c.id, ORGANIZATIONS.c.judge_monthly_budget_usd, ORGANIZATIONS.c.judge_calls_per_minute
).where(ORGANIZATIONS.c.id == bindparam("organization"))
_MARK = (
    update(TRACES)
    .where(
        TRACES.c.id == bindparam("trace"),
        # An array parameter, not an expanding IN list (see tiers._START).
        TRACES.c.status == any_(bindparam("from_statuses", type_=ARRAY(String))),
    )
    .values(status=bindparam("new_status"))
)
# What a re-run of the same attempt rewrites.
_CALL_RECORDED = (
    "provider",
    "model",
    "prompt",
    "exchanges",
    "verdict",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "error_kind",
    "error",
)
_call_insert = insert(JUDGE_CALLS)
# xmax is 0 on a freshly inserted row, not on one the upsert updated.
_RECORD_CALL = _call_insert.on_conflict_do_update(
    index_elements=[JUDGE_CALLS.c.trace_id, JUDGE_CALLS.c.evaluation_version, JUDGE_CALLS.c.attempt],
    set_={name: _call_insert.excluded[name] for name in _CALL_RECORDED},
).returning(literal_column("xmax = 0"))

T = TypeVar("T")


def judge_failed(failure: JudgeFailure) -> ApplicationError:
    # Non-retryable for Temporal: the workflow schedules the next attempt.
    return ApplicationError(failure.message, failure, type=JUDGE_FAILED, non_retryable=True)


async def heartbeating(work: Awaitable[T]) -> T:
    """Await ``work`` while heartbeating, so a dead worker is noticed in
    seconds rather than at the end of a long provider timeout."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        task.cancel()


# Categories a judge issue may carry into workflow history. The judge
# writes its own category, which could hold text from the trace: anything
# outside the rubric's criterion ids and this list becomes "other" (the
# original stays in judge_calls).
KNOWN_CATEGORIES = frozenset(
    {
        "accuracy", "bias", "compliance", "confidentiality", "dosing", "emergency", "fabrication",
        "harm", "hallucination", "injection", "interaction", "legal", "manipulation", "medical",
        "pii", "phi", "privacy", "quality", "referral", "refusal", "safety", "security", "toxicity",
    }
)  # fmt: skip


def _category(raw: str, vocabulary: frozenset[str]) -> str:
    category = re.sub(r"[^a-z0-9_]+", "_", raw.lower()).strip("_")
    return category if category in vocabulary else "other"


def _findings(outcome: JudgeOutcome, vocabulary: frozenset[str]) -> list[Finding]:
    """The judge's issues as findings. Their messages are the judge's words
    about the trace, so they stay in PostgreSQL (judge_calls); the findings
    that travel through workflow history carry generic text only."""
    if outcome.verdict is None:
        return []
    findings = []
    for issue in outcome.verdict.issues:
        category = _category(issue.category, vocabulary)
        findings.append(
            Finding(
                rule_id=f"judge.{category}",
                category=category,
                severity=issue.severity,
                message=f"The LLM judge reported a {issue.severity.value} {category} issue "
                "(its explanation is in the judge call)",
            )
        )
    return findings


class JudgeClients:
    """Provider clients kept per configuration and key, reused across calls.

    A client per call meant a new TLS context and a new connection (a TLS
    handshake to the provider) for every judge call. The least recently used
    client is dropped beyond ``limit``; it is not closed here, since a call
    may still be using it (its connections close when it is collected).
    """

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._judges: OrderedDict[tuple[str, str], Judge] = OrderedDict()

    def get(self, config: JudgeConfig, api_key: str) -> Judge:
        key = (config.model_dump_json(), hashlib.sha256(api_key.encode()).hexdigest())
        judge = self._judges.pop(key, None) or make_judge(config, api_key)
        self._judges[key] = judge
        while len(self._judges) > self._limit:
            self._judges.popitem(last=False)
        return judge


class JudgeActivities:
    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], packs: PackResolver, settings: Settings
    ) -> None:
        self._sessions = session_factory
        # For the reads and the one-statement writes that need no transaction.
        self._statements = autocommit_sessions(session_factory)
        self._packs = packs
        self._settings = settings
        self._clients = JudgeClients()

    @activity.defn(name="tier3_judge")
    async def judge(self, task: JudgeInput) -> TierOutcome:
        started = time.perf_counter()
        async with self._statements() as session:
            text = (
                await session.execute(
                    LOAD_TRACE_TEXT, {"trace": task.trace_id, "organization": task.organization_id}
                )
            ).first()
            if text is None:
                raise trace_not_found()
            trace = TraceText(*text)
            organization = (
                await session.execute(_JUDGE_LIMITS, {"organization": task.organization_id})
            ).first()
            try:
                resolved = await resolve_judge(session, self._settings, task.organization_id, task.domain)
            except (SecretKeyMissing, ValidationError) as exc:
                # Retrying cannot fix a configuration: end the tier, visibly.
                reason = str(exc) if isinstance(exc, SecretKeyMissing) else "stored settings do not validate"
                raise judge_failed(
                    JudgeFailure(
                        kind="config", retryable=False, message=f"judge configuration unusable: {reason}"
                    )
                ) from None
            if resolved is None:
                return TierOutcome(
                    tier=3, name=JUDGE, status="not_configured", detail={"reason": "no judge provider"}
                )
            skipped = await self._over_budget(session, organization)
            if skipped is not None:
                return skipped
            per_minute = (
                organization.judge_calls_per_minute
                if organization and organization.judge_calls_per_minute
                else self._settings.judge_org_calls_per_minute
            )
        if not task.rate_slot_reserved:
            await self._take_rate_slot(task, per_minute)
        if task.attempt > 1:  # only a failed attempt sets the trace retrying
            await self._set_status(task, TraceStatus.EVALUATING, TraceStatus.RETRYING)
        normalised, tier0 = normalise(trace)
        pack = await self._packs.get(task.organization_id, task.pack)
        input_text, output_text = (
            (normalised.input, normalised.output)
            if resolved.send_raw_text
            else (tier0.redacted_input, tier0.redacted_output)
        )
        prompt = build_prompt(pack, input_text=input_text, output_text=output_text, findings=task.findings)

        judge = self._clients.get(resolved.config, resolved.api_key)
        try:
            outcome = await heartbeating(run_judge(judge, prompt, rubric_ids(pack)))
        except JudgeProviderError as exc:
            failure = JudgeFailure(
                kind=exc.kind,
                retryable=exc.retryable,
                retry_after_seconds=exc.retry_after_seconds,
                message=exc.message,
            )
            await self._record_failure(
                task, resolved, prompt, failure, exc.exchanges, time.perf_counter() - started
            )
            raise judge_failed(failure) from None

        cost = call_cost_usd(resolved.prices, outcome.model, outcome.input_tokens, outcome.output_tokens)
        await self._record(task, resolved, outcome, cost)
        detail = {
            "provider": outcome.provider,
            "model": outcome.model,
            "attempts": task.attempt,
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "cost_usd": cost,
            "latency_ms": outcome.latency_ms,
        }
        verdict = outcome.verdict
        vocabulary = frozenset(rubric_ids(pack)) | KNOWN_CATEGORIES
        if verdict is None:
            # Refused or unusable twice: recorded as a judge error, never a pass.
            return TierOutcome(
                tier=3,
                name=JUDGE,
                status="error",
                detail={**detail, "error_kind": outcome.error_kind, "error": outcome.error},
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        return TierOutcome(
            tier=3,
            name=JUDGE,
            status="completed",
            severity=verdict.severity,
            passed=verdict.passed,
            settled=True,
            findings=_findings(outcome, vocabulary),
            detail={
                **detail,
                "rating": verdict.rating.value,
                "confidence": verdict.confidence,
                "review_recommended": verdict.review_recommended,
                "criteria": {score.criterion: score.score for score in verdict.criteria},
            },
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    async def _take_rate_slot(self, task: JudgeInput, per_minute: int) -> None:
        """Take (or reserve) the organisation's next call slot; a reserved
        slot is kept even if marking the trace retrying fails (the slot goes
        unused, the next attempt takes another)."""
        async with self._statements() as session:
            wait = await take_rate_token(session, task.organization_id, per_minute)
            if wait > 0:
                await _mark(session, task, TraceStatus.RETRYING, TraceStatus.EVALUATING, TraceStatus.QUEUED)
        if wait > 0:
            raise judge_failed(
                JudgeFailure(
                    kind="org_rate_limited",
                    retryable=True,
                    retry_after_seconds=wait,
                    message="the organisation's judge rate limit is reached; the next slot is reserved",
                )
            )

    async def _set_status(self, task: JudgeInput, status: TraceStatus, *when: TraceStatus) -> None:
        async with self._statements() as session:
            await _mark(session, task, status, *when)

    async def _over_budget(self, session: AsyncSession, organization: Row[Any] | None) -> TierOutcome | None:
        """A "skipped: budget" outcome when this month's judge spend reached the cap."""
        budget = organization.judge_monthly_budget_usd if organization else None
        if budget is None and self._settings.judge_monthly_budget_usd is not None:
            budget = Decimal(str(self._settings.judge_monthly_budget_usd))
        if budget is None or organization is None:
            return None
        spent = await month_to_date_spend(session, organization.id, dt.datetime.now(dt.UTC))
        if spent < budget:
            return None
        return TierOutcome(
            tier=3,
            name=JUDGE,
            status="skipped",
            detail={"reason": "budget", "budget_usd": float(budget), "spent_usd": float(spent)},
        )

    async def _record(
        self, task: JudgeInput, resolved: ResolvedJudge, outcome: JudgeOutcome, cost: float | None
    ) -> None:

        async def write(session: AsyncSession) -> bool:
            return await _write_call(
                session,
                task,
                provider=outcome.provider,
                model=outcome.model,
                prompt=outcome.prompt,
                exchanges=outcome.exchanges,
                verdict=outcome.verdict.model_dump(mode="json") if outcome.verdict else None,
                cost_usd=cost,
                latency_ms=float(outcome.latency_ms),
                error_kind=outcome.error_kind,
                error=outcome.error,
            )

        # The provider has answered (and been paid): a dropped connection
        # must not make Temporal call it again.
        inserted = await in_transaction(self._sessions, write)
        if inserted:
            metrics.judge_call(
                provider=outcome.provider,
                error_kind=outcome.error_kind,
                seconds=outcome.latency_ms / 1000,
                cost_usd=cost,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
            )

    async def _record_failure(
        self,
        task: JudgeInput,
        resolved: ResolvedJudge,
        prompt: JudgePrompt,
        failure: JudgeFailure,
        exchanges: list[JudgeExchange],
        elapsed_seconds: float,
    ) -> None:
        """A failed attempt is recorded too; replies received before the
        failure (a first call before a failed repair) were paid for."""
        cost = call_cost_usd(
            resolved.prices,
            resolved.config.model,
            sum(e.input_tokens for e in exchanges),
            sum(e.output_tokens for e in exchanges),
        )

        async def write(session: AsyncSession) -> bool:
            inserted = await _write_call(
                session,
                task,
                provider=resolved.config.provider,
                model=resolved.config.model,
                prompt=prompt,
                exchanges=exchanges,
                verdict=None,
                cost_usd=cost,
                latency_ms=elapsed_seconds * 1000,
                error_kind=failure.kind,
                error=failure.message,
                failed_requests=1,
            )
            if failure.retryable:
                await _mark(session, task, TraceStatus.RETRYING, TraceStatus.EVALUATING, TraceStatus.QUEUED)
            return inserted

        inserted = await in_transaction(self._sessions, write)
        if inserted:
            metrics.judge_call(
                provider=resolved.config.provider,
                error_kind=failure.kind,
                seconds=elapsed_seconds,
                cost_usd=cost,
                input_tokens=sum(e.input_tokens for e in exchanges),
                output_tokens=sum(e.output_tokens for e in exchanges),
            )

    def all(self) -> list[object]:
        return [self.judge]


async def _mark(session: AsyncSession, task: JudgeInput, status: TraceStatus, *when: TraceStatus) -> None:
    """Set the trace's status, only from one of the ``when`` statuses."""
    await session.execute(
        _MARK,
        {"trace": task.trace_id, "from_statuses": [w.value for w in when], "new_status": status.value},
    )


async def _write_call(
    session: AsyncSession,
    task: JudgeInput,
    *,
    prompt: JudgePrompt,
    exchanges: list[JudgeExchange],
    cost_usd: float | None,
    failed_requests: int = 0,
    **values: object,
) -> bool:
    """Store one attempt and count it in the hour's usage.

    The attempt is keyed by (trace, version, attempt): a re-run of the same
    attempt (a worker lost after writing) updates its row and adds nothing
    to usage a second time. True when the row is new, so the caller counts
    the attempt in its metrics once too (after the commit; a worker lost
    between the commit and that leaves it uncounted there).
    """
    input_tokens = sum(e.input_tokens for e in exchanges)
    output_tokens = sum(e.output_tokens for e in exchanges)
    inserted = await session.scalar(
        _RECORD_CALL,
        dict(
            organization_id=task.organization_id,
            trace_id=task.trace_id,
            evaluation_version=task.version,
            attempt=task.attempt,
            prompt=prompt.model_dump(mode="json"),
            exchanges=[e.model_dump(mode="json") for e in exchanges],
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            **values,
        ),
    )
    if inserted:
        await add_usage(
            session,
            task.organization_id,
            task.domain,
            JUDGE_TIER,
            calls=len(exchanges) + failed_requests,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
        )
    return bool(inserted)

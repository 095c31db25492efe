"""EvaluateTrace: one workflow per trace, running the tiers cheapest first.

The workflow only orchestrates: every tier is an activity (timeouts and
retries below), the escalation policy decides which tier runs next, and a
persist activity writes the outcome. Its input and history hold ids and
findings (rule ids, severities, offsets) — never trace text.

The judge (Tier 3) runs on its own task queue, and its retries are driven
here rather than by Temporal's retry policy: the workflow then knows each
attempt and its error, can wait exactly as long as a provider's
Retry-After asks, and shows the trace as ``retrying`` meanwhile.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.errors import NON_RETRYABLE, TRACE_NOT_FOUND
    from core import search_attributes as sa
    from evaluators.escalation import JUDGE, TIER_NAMES, next_tier
    from models.schemas import (
        EvaluateTraceInput,
        FinalVerdict,
        JudgeFailure,
        JudgeInput,
        JudgeProgress,
        PackRef,
        PersistInput,
        StatusUpdateInput,
        TierInput,
        TierOutcome,
        TraceStatus,
        WorkflowState,
    )

TIER_ACTIVITIES = ("tier0_sanitise", "tier1_rules", "tier2_classifier", "tier3_judge", "tier4_expert_review")

# PostgreSQL or a provider being down for a while must delay an evaluation,
# not drop it: retry with capped backoff for up to a day, then fail visibly.
DURABLE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
    non_retryable_error_types=NON_RETRYABLE,
)
STEP_TIMEOUT = timedelta(seconds=30)
GIVE_UP_AFTER = timedelta(hours=24)

JUDGE_TIER = 3
# Two provider requests (a call and a repair) of at most 10 minutes each fit
# in one attempt; a lost worker is noticed by the missing heartbeat instead.
JUDGE_ATTEMPT_TIMEOUT = timedelta(minutes=25)
JUDGE_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
# An attempt no worker picks up (none polls the judge queue, or it is deeply
# backlogged) times out too, and is retried like any other failure.
JUDGE_SCHEDULE_TO_CLOSE = JUDGE_ATTEMPT_TIMEOUT + timedelta(minutes=10)
JUDGE_BACKOFF_FIRST_SECONDS = 2.0
JUDGE_BACKOFF_MAX_SECONDS = 300.0
# A Retry-After beyond this is capped: the trace is retried, not parked for days.
JUDGE_RETRY_AFTER_MAX_SECONDS = 1800.0
JUDGE_FAILED = "JudgeCallFailed"


@workflow.defn(name="EvaluateTrace")
class EvaluateTrace:
    def __init__(self) -> None:
        self._trace_id = None
        self._status = TraceStatus.QUEUED
        self._current_tier = "none"
        self._outcomes: list[TierOutcome] = []
        self._verdict: FinalVerdict | None = None
        self._version = 1
        self._judge: JudgeProgress | None = None

    @workflow.query(name="status")
    def status(self) -> WorkflowState:
        return WorkflowState(
            trace_id=self._trace_id,
            status=self._status,
            current_tier=self._current_tier,
            outcomes=self._outcomes,
            verdict=self._verdict,
            version=self._version,
            judge=self._judge,
        )

    @workflow.run
    async def run(self, task: EvaluateTraceInput) -> FinalVerdict | None:
        self._trace_id = task.trace_id
        self._version = task.version
        self._set_status(TraceStatus.EVALUATING)
        pack = None  # chosen by Tier 0, pinned for the later tiers
        try:
            tier = next_tier(self._outcomes)
            while tier is not None:
                self._current_tier = TIER_NAMES[tier]
                workflow.upsert_search_attributes([sa.TIER.value_set(self._current_tier)])
                if tier == JUDGE_TIER and pack is not None:
                    outcome = await self._run_judge(task, pack)
                else:
                    outcome = await self._step(
                        TIER_ACTIVITIES[tier],
                        TierInput(
                            trace_id=task.trace_id,
                            organization_id=task.organization_id,
                            domain=task.domain,
                            pack=pack,
                            previous=self._outcomes,
                        ),
                        TierOutcome,
                    )
                pack = pack or outcome.pack
                self._outcomes.append(outcome)
                tier = next_tier(self._outcomes)

            info = workflow.info()
            self._verdict = await self._step(
                "persist_evaluation",
                PersistInput(
                    trace_id=task.trace_id,
                    organization_id=task.organization_id,
                    domain=task.domain,
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    version=task.version,
                    pack=pack,
                    outcomes=self._outcomes,
                ),
                FinalVerdict,
            )
        except ActivityError as err:
            if isinstance(err.cause, ApplicationError) and err.cause.type == TRACE_NOT_FOUND:
                # Deleted while we were evaluating it: nothing left to evaluate.
                workflow.logger.info("trace gone, stopping")
                return None
            await self._step(
                "mark_trace_failed",
                StatusUpdateInput(trace_id=task.trace_id, status=TraceStatus.FAILED),
                None,
            )
            self._set_status(TraceStatus.FAILED)
            raise ApplicationError("evaluation failed", type="EvaluationFailed", non_retryable=True) from err

        self._current_tier = "done"
        self._set_status(TraceStatus.COMPLETED)
        workflow.upsert_search_attributes(
            [sa.TIER.value_set(self._verdict.decided_by), sa.SEVERITY.value_set(self._verdict.severity.value)]
        )
        return self._verdict

    async def _run_judge(self, task: EvaluateTraceInput, pack: PackRef) -> TierOutcome:
        """Tier 3 until it answers, fails for good, or a day has passed.

        Transient failures (timeouts, 5xx, 429, connection errors, the
        organisation's own rate limit, a lost worker) are retried after the
        provider's Retry-After or a capped exponential backoff; permanent
        ones (auth, invalid request, content policy) end the tier with the
        error recorded, and the evaluation completes from the other tiers.
        """
        findings = [finding for outcome in self._outcomes for finding in outcome.findings]
        started = workflow.now()
        self._judge = JudgeProgress()
        attempt = 0
        rate_slot_reserved = False
        while True:
            attempt += 1
            self._judge.attempts = attempt
            try:
                return await workflow.execute_activity(
                    "tier3_judge",
                    JudgeInput(
                        trace_id=task.trace_id,
                        organization_id=task.organization_id,
                        domain=task.domain,
                        pack=pack,
                        version=task.version,
                        attempt=attempt,
                        findings=findings,
                        rate_slot_reserved=rate_slot_reserved,
                    ),
                    result_type=TierOutcome,
                    task_queue=task.judge_task_queue,
                    start_to_close_timeout=JUDGE_ATTEMPT_TIMEOUT,
                    schedule_to_close_timeout=JUDGE_SCHEDULE_TO_CLOSE,
                    heartbeat_timeout=JUDGE_HEARTBEAT_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
            except ActivityError as err:
                if isinstance(err.cause, ApplicationError) and err.cause.type == TRACE_NOT_FOUND:
                    raise  # deleted meanwhile: run() stops quietly
                failure = _judge_failure(err)
            self._judge.last_error_kind = failure.kind
            self._judge.last_error = failure.message
            # A rate-limited attempt reserved the organisation's next slot.
            rate_slot_reserved = failure.kind == "org_rate_limited"
            delay = _judge_delay(failure, attempt)
            if not failure.retryable or workflow.now() + delay - started > GIVE_UP_AFTER:
                self._judge.next_attempt_at = None
                self._set_status(TraceStatus.EVALUATING)
                return TierOutcome(
                    tier=JUDGE_TIER,
                    name=JUDGE,
                    status="error",
                    detail={"attempts": attempt, "error_kind": failure.kind, "error": failure.message},
                )
            self._judge.next_attempt_at = workflow.now() + delay
            self._set_status(TraceStatus.RETRYING)
            await workflow.sleep(delay)
            self._set_status(TraceStatus.EVALUATING)

    async def _step(self, activity: str, arg: object, result_type: type | None):
        return await workflow.execute_activity(
            activity,
            arg,
            result_type=result_type,
            start_to_close_timeout=STEP_TIMEOUT,
            schedule_to_close_timeout=GIVE_UP_AFTER,
            retry_policy=DURABLE_RETRY,
        )

    def _set_status(self, status: TraceStatus) -> None:
        self._status = status
        workflow.upsert_search_attributes([sa.STATUS.value_set(status.value)])


def _judge_failure(err: ActivityError) -> JudgeFailure:
    """What went wrong in one judge attempt, as the activity reported it."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == JUDGE_FAILED and cause.details:
        try:
            return JudgeFailure.model_validate(cause.details[0])
        except ValueError:
            pass  # a malformed report must not wedge the workflow: retry like any failure
    if isinstance(cause, TimeoutError):
        return JudgeFailure(
            kind="timeout",
            retryable=True,
            message=f"the judge attempt timed out ({cause.type.name.lower() if cause.type else 'unknown'})",
        )
    # Anything else (PostgreSQL down, a worker bug) is worth another try.
    name = type(cause).__name__ if cause is not None else "unknown"
    return JudgeFailure(kind="worker_error", retryable=True, message=f"judge attempt failed: {name}")


def _judge_delay(failure: JudgeFailure, attempt: int) -> timedelta:
    """The provider's Retry-After when it gave one, else capped exponential
    backoff. Computed in float seconds and capped before a timedelta is made:
    a huge Retry-After or attempt count must not overflow."""
    if failure.kind == "org_rate_limited" and failure.retry_after_seconds is not None:
        # The time until the slot this attempt reserved: waiting less would
        # exceed the organisation's rate, so only the day's limit caps it.
        seconds = min(max(0.0, failure.retry_after_seconds), GIVE_UP_AFTER.total_seconds())
    elif failure.retry_after_seconds is not None:
        seconds = min(max(0.0, failure.retry_after_seconds), JUDGE_RETRY_AFTER_MAX_SECONDS)
    else:
        seconds = min(JUDGE_BACKOFF_FIRST_SECONDS * 2.0 ** min(attempt - 1, 20), JUDGE_BACKOFF_MAX_SECONDS)
    return timedelta(seconds=seconds)

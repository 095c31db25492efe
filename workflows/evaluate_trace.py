"""EvaluateTrace: one workflow per trace, running the tiers cheapest first.

New traces run it as the type ``EvaluateTraceV2``; the type
``EvaluateTrace`` is kept for runs that began as it (see EvaluateTraceV2).

The workflow only orchestrates: every tier is an activity (timeouts and
retries below), the escalation policy decides which tier runs next, and a
persist activity writes the outcome. Its input and history hold ids and
findings (rule ids, severities, offsets) — never trace text.

The judge (Tier 3) runs on its own task queue, and its retries are driven
here rather than by Temporal's retry policy: the workflow then knows each
attempt and its error, can wait exactly as long as a provider's
Retry-After asks, and shows the trace as ``retrying`` meanwhile.

Expert review (Tier 4) is the workflow waiting: when the pack's policy
asks for review, the automated verdict is stored, the trace is
``awaiting_review``, and the workflow waits for a label — an update
(``submit_label``, from the API) or a signal (``expert_label``, from the
Temporal UI or CLI) — until the pack's deadline, then completes with the
automated verdict as ``review_expired``. A label given after completion
starts a short run of the same workflow id (``relabel``) that applies it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.errors import NON_RETRYABLE, TRACE_NOT_FOUND
    from core import search_attributes as sa
    from core.alerts import MAX_DELIVERY_ATTEMPTS
    from evaluators.escalation import (
        EXPERT,
        EXPERT_TIER,
        JUDGE,
        JUDGE_TIER,
        TIER_NAMES,
        next_tier,
        review_reason,
    )
    from models.schemas import (
        ApplyLabelInput,
        DeliverAlertsInput,
        EvaluateTraceInput,
        FinalVerdict,
        JudgeFailure,
        JudgeInput,
        JudgeProgress,
        LabelResult,
        LabelSignal,
        PackRef,
        PersistInput,
        ReviewExpiredInput,
        ReviewPolicy,
        ReviewRequestInfo,
        StatusUpdateInput,
        StoredVerdict,
        TierInput,
        TierOutcome,
        TraceStatus,
        WorkflowState,
    )

TIER_ACTIVITIES = ("tier0_sanitise", "tier1_rules", "tier2_classifier", "tier3_judge")
# What each step does, in the words the Temporal UI shows on the timeline.
STEP_SUMMARIES = {
    "tier0_sanitise": "Tier 0: normalise, redact personal data, pick the domain pack",
    "tier1_rules": "Tier 1: the domain pack's rules",
    "tier2_classifier": "Tier 2: learned risk classifier",
    "persist_evaluation": "Store the verdict, issues and usage",
    "apply_expert_label": "Apply an expert's label (overrides the automated verdict)",
    "expire_review": "Review deadline passed: the automated verdict stands",
    "mark_trace_failed": "Give up: mark the trace failed",
}

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
# The time one alert delivery attempt may take.
ALERT_DELIVERY_TIMEOUT = timedelta(minutes=2)
# How long a run started only to apply a label waits for it (it comes with the start).
RELABEL_WAIT = timedelta(minutes=5)

# A label waiting to be applied: the label, where it came from, its id.
PendingLabel = tuple[LabelSignal, str, Any]


@workflow.defn(name="EvaluateTrace")
class EvaluateTrace:
    """Runs started before ``EvaluateTraceV2`` existed: they replay as they
    were recorded, their branches chosen by ``workflow.patched`` markers."""

    # False in EvaluateTraceV2, which takes these patches' new branches
    # without asking (and so without recording markers).
    _DECIDED_BY_PATCHES = True
    PATCHES_BEFORE_V2 = frozenset({"coalesced-search-attributes", "review-attributes-once"})

    def _patched(self, patch_id: str) -> bool:
        if not self._DECIDED_BY_PATCHES and patch_id in self.PATCHES_BEFORE_V2:
            return True
        return workflow.patched(patch_id)

    @workflow.init
    def __init__(self, task: EvaluateTraceInput) -> None:
        self._trace_id = None
        self._status = TraceStatus.QUEUED
        self._current_tier = "none"
        self._outcomes: list[TierOutcome] = []
        self._verdict: FinalVerdict | None = None
        self._version = 1
        self._judge: JudgeProgress | None = None
        self._review_reason: str | None = None
        self._review_deadline = None
        # A run started to apply a label takes it from the first moment: the
        # update comes with the start, before run() has begun.
        self._accepting_labels = task.relabel
        self._pending_labels: list[PendingLabel] = []
        self._label_results: dict[Any, LabelResult] = {}
        # Fewer search-attribute updates (each is a visibility write on the
        # server): set in run() for workflows started by this code.
        self._coalesced_attributes = False

    # -- expert labels ----------------------------------------------------

    @workflow.update(name="submit_label")
    async def submit_label(self, label: LabelSignal) -> LabelResult:
        """A validated label with a synchronous answer: the new final verdict."""
        label_id = label.label_id or workflow.uuid4()
        self._pending_labels.append((label, "api" if label.label_id else "signal", label_id))
        await workflow.wait_condition(lambda: label_id in self._label_results)
        return self._label_results[label_id]

    @submit_label.validator
    def _label_accepted(self, label: LabelSignal) -> None:
        if not self._accepting_labels:
            raise ValueError(f"this evaluation is {self._status.value}, not waiting for a label")

    @workflow.signal(name="expert_label")
    def expert_label(self, payload: dict[str, Any]) -> None:
        """A label from the Temporal UI or CLI. A signal has no answer, so a
        bad one is logged and dropped rather than failing the workflow."""
        try:
            label = LabelSignal.model_validate(payload)
        except ValueError:
            workflow.logger.warning("expert_label signal ignored: invalid payload")
            return
        if not self._accepting_labels:
            workflow.logger.warning("expert_label signal ignored: not waiting for a label")
            return
        self._pending_labels.append((label, "signal", workflow.uuid4()))

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
            review_reason=self._review_reason,
            review_deadline=self._review_deadline,
            labels=len(self._label_results),
        )

    @workflow.run
    async def run(self, task: EvaluateTraceInput) -> FinalVerdict | None:
        self._trace_id = task.trace_id
        self._version = task.version
        if task.relabel:
            return await self._relabel(task)
        # The tier is no longer written for the cheap tiers (they take
        # milliseconds; the judge's is kept), and the final status, tier and
        # severity are written in one update: about 2.4 updates per trace
        # instead of 5.8, which bench/pipeline.py measured as most of the gap
        # to the bare-Temporal ceiling. Earlier workflows replay as they ran.
        self._coalesced_attributes = self._patched("coalesced-search-attributes")
        if self._DECIDED_BY_PATCHES:
            self._set_status(TraceStatus.EVALUATING)
        else:
            # Still "queued" in Temporal until the judge or the verdict: the
            # cheap tiers take milliseconds, and one update fewer per trace.
            self._status = TraceStatus.EVALUATING
        try:
            pack, policy = await self._climb(task)
            reason = None
            if policy is not None:
                reason = review_reason(
                    self._outcomes,
                    risk_level=policy.risk_level,
                    judge_ratings=policy.judge_ratings,
                    confidence_below=policy.confidence_below,
                    audit_sample_rate=policy.audit_sample_rate,
                    key=str(task.trace_id),
                )
            review = None
            if reason is not None and policy is not None:
                self._review_reason = reason
                self._review_deadline = workflow.now() + timedelta(hours=policy.deadline_hours)
                review = ReviewRequestInfo(
                    reason=reason, risk_level=policy.risk_level, deadline=self._review_deadline
                )
            info = workflow.info()
            # From here a label may come: once the verdict is stored, the
            # trace says awaiting_review or completed before this run has
            # gone on. An expert may always override, so a label that comes
            # while the run finishes is applied below, not refused.
            self._accepting_labels = True
            # The automated verdict is stored now, also when review follows:
            # it stands until an expert labels the trace, or for good.
            stored = await self._step(
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
                    review=review,
                ),
                StoredVerdict,
            )
            self._verdict = stored
            if review is not None:
                # As stored: same moment, same word. One update for status,
                # tier and severity (the automated verdict's, so that a
                # filter on severity finds traces awaiting review too);
                # earlier workflows replay their separate updates.
                if self._patched("review-attributes-once"):
                    self._status, self._current_tier = TraceStatus.AWAITING_REVIEW, EXPERT
                    workflow.upsert_search_attributes(
                        [
                            sa.STATUS.value_set(TraceStatus.AWAITING_REVIEW.value),
                            sa.TIER.value_set(EXPERT),
                            sa.SEVERITY.value_set(self._verdict.severity.value),
                        ]
                    )
                else:
                    self._set_status(TraceStatus.AWAITING_REVIEW)
            # V2 skips the delivery step when no alert waits for it.
            if self._DECIDED_BY_PATCHES or stored.alerts_pending:
                await self._deliver_alerts(task)
            if review is not None:
                await self._await_review(task, review)
            if self._pending_labels or not workflow.all_handlers_finished():
                await self._apply_labels(task)
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
        # Same workflow task as the check above: no label can slip in unapplied.
        self._accepting_labels = False
        self._finish()
        return self._verdict

    async def _climb(self, task: EvaluateTraceInput) -> tuple[PackRef | None, ReviewPolicy | None]:
        """Tiers 0-3, cheapest first, as far as the escalation policy sends the trace."""
        pack = policy = None  # chosen by Tier 0, pinned for the later tiers
        tier = next_tier(self._outcomes)
        while tier is not None and tier < EXPERT_TIER:
            self._current_tier = TIER_NAMES[tier]
            if not self._coalesced_attributes or tier == JUDGE_TIER:
                attributes = [sa.TIER.value_set(self._current_tier)]
                if not self._DECIDED_BY_PATCHES:  # V2 starts "evaluating" here
                    attributes.append(sa.STATUS.value_set(TraceStatus.EVALUATING.value))
                workflow.upsert_search_attributes(attributes)
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
            policy = policy or outcome.review
            self._outcomes.append(outcome)
            tier = next_tier(self._outcomes)
        return pack, policy

    async def _await_review(self, task: EvaluateTraceInput, review: ReviewRequestInfo) -> None:
        """Wait for an expert's label until the deadline, then apply it (or expire)."""
        self._accepting_labels = True
        if self._current_tier != EXPERT:  # not yet written by run()
            self._current_tier = EXPERT
            self._set_status(TraceStatus.AWAITING_REVIEW)
            workflow.upsert_search_attributes([sa.TIER.value_set(EXPERT)])
        workflow.set_current_details(
            f"Awaiting expert review ({review.reason}) "
            f"until {review.deadline.isoformat(timespec='minutes')}. "
            "Label with the API, or signal `expert_label` with "
            '{"verdict": "pass"|"fail", "severity": "...", "reviewer": "..."}.'
        )
        try:
            await workflow.wait_condition(
                lambda: bool(self._pending_labels),
                timeout=review.deadline - workflow.now(),
                timeout_summary="review deadline",
            )
        except TimeoutError:  # the deadline passed
            self._accepting_labels = False
            workflow.set_current_details("Review expired: the automated verdict stands.")
            await self._step(
                "expire_review",
                ReviewExpiredInput(
                    trace_id=task.trace_id, organization_id=task.organization_id, version=task.version
                ),
                None,
            )
            return
        await self._apply_labels(task)

    async def _relabel(self, task: EvaluateTraceInput) -> FinalVerdict | None:
        """A run started (with its label) after the evaluation had finished."""
        self._current_tier = EXPERT
        try:
            await workflow.wait_condition(lambda: bool(self._pending_labels), timeout=RELABEL_WAIT)
        except TimeoutError:  # the deadline passed
            return None
        await self._apply_labels(task)
        self._finish()
        return self._verdict

    async def _apply_labels(self, task: EvaluateTraceInput) -> None:
        """Apply labels in arrival order until none is waiting and every
        update handler has its answer; the latest label decides."""
        while True:
            while self._pending_labels:
                label, source, label_id = self._pending_labels.pop(0)
                result = await self._step(
                    "apply_expert_label",
                    ApplyLabelInput(
                        trace_id=task.trace_id,
                        organization_id=task.organization_id,
                        version=task.version,
                        label=label,
                        source=source,
                        label_id=label_id,
                    ),
                    LabelResult,
                )
                self._label_results[label_id] = result
                self._verdict = result.verdict
                if result.changed:
                    await self._deliver_alerts(task)  # an expert's verdict may alert too
            await workflow.wait_condition(
                lambda: bool(self._pending_labels) or workflow.all_handlers_finished()
            )
            if not self._pending_labels:
                # In the same workflow task as the check above: no update
                # can be accepted now that would never be applied.
                self._accepting_labels = False
                return

    async def _deliver_alerts(self, task: EvaluateTraceInput) -> None:
        """Send the alerts the verdict raised, with a few retries; a channel
        that stays down is recorded, never a reason to fail the evaluation."""
        try:
            await workflow.execute_activity(
                "deliver_alerts",
                DeliverAlertsInput(trace_id=task.trace_id, organization_id=task.organization_id),
                result_type=int,
                start_to_close_timeout=ALERT_DELIVERY_TIMEOUT,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_attempts=MAX_DELIVERY_ATTEMPTS,
                ),
                summary="Deliver alerts to the organisation's channels",
            )
        except ActivityError:
            workflow.logger.warning("alert delivery failed; recorded with the alert")

    def _finish(self) -> None:
        if self._verdict is not None:
            verdict = self._verdict
            workflow.set_current_details(
                f"Done: {'passed' if verdict.passed else 'failed'}, severity {verdict.severity.value}, "
                f"decided by {verdict.decided_by}."
            )
        self._current_tier = "done"
        if self._coalesced_attributes and self._verdict is not None:
            self._status = TraceStatus.COMPLETED
            workflow.upsert_search_attributes(
                [
                    sa.STATUS.value_set(TraceStatus.COMPLETED.value),
                    sa.TIER.value_set(self._verdict.decided_by),
                    sa.SEVERITY.value_set(self._verdict.severity.value),
                ]
            )
            return
        self._set_status(TraceStatus.COMPLETED)
        if self._verdict is not None:
            workflow.upsert_search_attributes(
                [
                    sa.TIER.value_set(self._verdict.decided_by),
                    sa.SEVERITY.value_set(self._verdict.severity.value),
                ]
            )

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
                    summary=f"Tier 3: LLM judge, attempt {attempt}",
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
            workflow.set_current_details(
                f"Judge retrying: attempt {attempt} failed ({failure.kind}: {failure.message}); "
                f"next attempt at {self._judge.next_attempt_at.isoformat(timespec='seconds')}"
            )
            await workflow.sleep(delay, summary=f"wait before judge attempt {attempt + 1} ({failure.kind})")
            workflow.set_current_details("")
            self._set_status(TraceStatus.EVALUATING)

    async def _step(self, activity: str, arg: object, result_type: type | None):
        return await workflow.execute_activity(
            activity,
            arg,
            result_type=result_type,
            start_to_close_timeout=STEP_TIMEOUT,
            schedule_to_close_timeout=GIVE_UP_AFTER,
            retry_policy=DURABLE_RETRY,
            summary=STEP_SUMMARIES.get(activity),
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
    if isinstance(cause, ActivityTimeoutError):
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


@workflow.defn(name="EvaluateTraceV2")
class EvaluateTraceV2(EvaluateTrace):
    """The evaluation workflow every new trace runs: ``EvaluateTrace`` on its
    newest branches, without patch markers, and without the alert delivery
    step when the stored verdict left no alert to deliver.

    Each ``workflow.patched`` call writes a marker and an update of the
    ``TemporalChangeVersion`` search attribute into every new run; with one
    more "evaluating" update at the start, that was 2.1 of the 3.5 search
    attribute updates per trace. Dropping them cut the pipeline's CPU per
    trace from 93-102 ms to 87 ms and raised its throughput from 19-21 to 23
    traces/s (``python -m bench.pipeline``, three alternating runs each).

    A later change to this workflow goes behind ``self._patched`` with a new
    id, which records a marker in both types, until such markers cost enough
    to start the next type the same way.
    """

    _DECIDED_BY_PATCHES = False

    @workflow.init
    def __init__(self, task: EvaluateTraceInput) -> None:
        super().__init__(task)

    @workflow.run
    async def run(self, task: EvaluateTraceInput) -> FinalVerdict | None:
        return await super().run(task)

"""EvaluateTrace: one workflow per trace, running the tiers cheapest first.

The workflow only orchestrates: every tier is an activity (timeouts and
retries below), the escalation policy decides which tier runs next, and a
persist activity writes the outcome. Its input and history hold ids and
findings (rule ids, severities, offsets) — never trace text.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.errors import NON_RETRYABLE, TRACE_NOT_FOUND
    from core import search_attributes as sa
    from evaluators.escalation import TIER_NAMES, next_tier
    from models.schemas import (
        EvaluateTraceInput,
        FinalVerdict,
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


@workflow.defn(name="EvaluateTrace")
class EvaluateTrace:
    def __init__(self) -> None:
        self._trace_id = None
        self._status = TraceStatus.QUEUED
        self._current_tier = "none"
        self._outcomes: list[TierOutcome] = []
        self._verdict: FinalVerdict | None = None

    @workflow.query(name="status")
    def status(self) -> WorkflowState:
        return WorkflowState(
            trace_id=self._trace_id,
            status=self._status,
            current_tier=self._current_tier,
            outcomes=self._outcomes,
            verdict=self._verdict,
        )

    @workflow.run
    async def run(self, task: EvaluateTraceInput) -> FinalVerdict | None:
        self._trace_id = task.trace_id
        self._set_status(TraceStatus.EVALUATING)
        pack = None  # chosen by Tier 0, pinned for the later tiers
        try:
            tier = next_tier(self._outcomes)
            while tier is not None:
                self._current_tier = TIER_NAMES[tier]
                workflow.upsert_search_attributes([sa.TIER.value_set(self._current_tier)])
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

"""The expert review queue: what waits for a reviewer, claims on it, and how reviews go.

A claim is advisory: it tells other reviewers who is looking at a trace, so
two experts do not label the same one. Labels are accepted from anyone.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH, distinct_on
from sqlalchemy.engine import Row

from api.deps import CurrentCaller, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError, error_responses
from api.pagination import within
from evaluators.escalation import CLASSIFIER, EXPERT
from evaluators.types import Severity
from models.schemas import ShortText, workflow_id_for
from models.tables import EvaluationResult, ExpertLabel, ReviewRequest, Trace, VerdictChange

router = APIRouter(tags=["reviews"], responses=AUTHENTICATED_ERRORS)

# A claim older than this counts as released: a reviewer who walks away does
# not block the trace until its deadline.
CLAIM_TTL = dt.timedelta(minutes=30)
MAX_QUEUE_SIZE = 200
PENDING, LABELLED, EXPIRED = "pending", "labelled", "expired"
# Severities and risk levels share one vocabulary (none < low < ... < critical).
RANKS = {severity.value: severity.rank for severity in Severity}


class ReviewerIn(BaseModel):
    # Unknown fields are rejected so that a typo gets a 422 naming it.
    model_config = ConfigDict(extra="forbid")

    reviewer: ShortText


class AutomatedVerdict(BaseModel):
    passed: bool
    decided_by: str


class ReviewItem(BaseModel):
    trace_id: uuid.UUID
    version: int
    domain: str
    reason: str
    severity: Severity = Field(description="Severity of the automated verdict.")
    risk_level: str = Field(description="Risk level of the domain pack.")
    deadline: dt.datetime
    created_at: dt.datetime
    claimed_by: str | None = Field(
        description="Who holds the claim; null when nobody does or the claim is over 30 minutes old."
    )
    claimed_at: dt.datetime | None
    workflow_id: str
    automated: AutomatedVerdict
    classifier_risk: float | None = Field(description="Tier 2's risk of this version; null without a model.")
    judge_passed: bool | None = Field(
        description="The judge's verdict of this version; null when it gave none."
    )
    disagreement: bool = Field(description="Tier 2 and the judge disagree (risk 0.5 or more against a pass).")


class ReviewQueue(BaseModel):
    items: list[ReviewItem]


class Agreement(BaseModel):
    compared: int
    agreed: int
    rate: float | None = Field(description="agreed / compared; null when nothing was compared.")


class ReviewStats(BaseModel):
    pending: int
    labelled: int
    expired: int
    median_seconds_to_label: float | None
    agreement: dict[str, Agreement] = Field(
        description="Against the expert: 'automated' (the automated final verdict), always present, "
        "'classifier' (Tier 2's risk, unsafe from 0.5) and one entry per other tier that rated a labelled "
        "trace (e.g. 'judge'); and 'classifier_vs_judge' over every evaluation both rated."
    )


def _from_tiers(tiers: Any, path: str, type_: Any) -> ColumnElement[Any]:
    """One value out of an evaluation's ``tiers`` list (SQL/JSON path), or null."""
    return cast(func.jsonb_path_query_first(tiers, cast(literal(path), JSONPATH)), type_)


def classifier_risk(tiers: Any) -> ColumnElement[Any]:
    return _from_tiers(tiers, '$[*] ? (@.tier == 2 && @.status == "completed").detail.risk', Float)


def judge_passed(tiers: Any) -> ColumnElement[Any]:
    return _from_tiers(tiers, '$[*] ? (@.tier == 3 && @.status == "completed").passed', Boolean)


def _agreement(compared: int, agreed: int) -> Agreement:
    return Agreement(compared=compared, agreed=agreed, rate=agreed / compared if compared else None)


def _claim_is_live() -> ColumnElement[bool]:
    return and_(ReviewRequest.claimed_by.is_not(None), ReviewRequest.claimed_at > func.now() - CLAIM_TTL)


def _item_columns() -> list[Any]:
    """What an item is made of; also the RETURNING list of claim and unclaim."""
    live = _claim_is_live()
    return [
        ReviewRequest.trace_id,
        ReviewRequest.version,
        ReviewRequest.domain,
        ReviewRequest.reason,
        ReviewRequest.severity,
        ReviewRequest.risk_level,
        ReviewRequest.deadline,
        ReviewRequest.created_at,
        # An expired claim is shown as none, exactly as the queue treats it.
        case((live, ReviewRequest.claimed_by)).label("claimed_by"),
        case((live, ReviewRequest.claimed_at)).label("claimed_at"),
        EvaluationResult.passed,
        EvaluationResult.decided_by,
        classifier_risk(EvaluationResult.tiers).label("classifier_risk"),
        judge_passed(EvaluationResult.tiers).label("judge_passed"),
    ]


def _same_evaluation() -> ColumnElement[bool]:
    # While a review is pending its version's result is the automated verdict.
    return and_(
        EvaluationResult.trace_id == ReviewRequest.trace_id, EvaluationResult.version == ReviewRequest.version
    )


def _item(row: Row[Any]) -> ReviewItem:
    return ReviewItem(
        trace_id=row.trace_id,
        version=row.version,
        domain=row.domain,
        reason=row.reason,
        severity=Severity(row.severity),
        risk_level=row.risk_level,
        deadline=row.deadline,
        created_at=row.created_at,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        workflow_id=workflow_id_for(row.trace_id, row.version),
        automated=AutomatedVerdict(passed=row.passed, decided_by=row.decided_by),
        classifier_risk=row.classifier_risk,
        judge_passed=row.judge_passed,
        disagreement=row.classifier_risk is not None
        and row.judge_passed is not None
        and (row.classifier_risk >= 0.5) == row.judge_passed,
    )


@router.get("/reviews", response_model=ReviewQueue)
async def list_reviews(
    caller: CurrentCaller,
    session: Session,
    domain: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_-]{0,63}$")] = None,
    claimed: Annotated[bool | None, Query(description="Only claimed (true) or unclaimed (false).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_QUEUE_SIZE)] = 50,
) -> ReviewQueue:
    """Pending reviews, highest priority first: severity of the automated
    verdict (critical first); then where a label teaches Tier 2 the most:
    traces on which it and the judge disagree, then those it is least sure
    of (risk nearest 0.5); then the pack's risk level, then age (oldest
    first). A claim older than 30 minutes counts as released."""
    query = (
        select(*_item_columns())
        .select_from(ReviewRequest)
        .join(EvaluationResult, _same_evaluation())
        .where(ReviewRequest.organization_id == caller.organization_id, ReviewRequest.status == PENDING)
    )
    if domain is not None:
        query = query.where(ReviewRequest.domain == domain)
    if claimed is not None:
        live = _claim_is_live()
        query = query.where(live if claimed else ~live)
    risk = classifier_risk(EvaluationResult.tiers)
    disagree = and_(risk.is_not(None), (risk >= 0.5) == judge_passed(EvaluationResult.tiers))
    query = query.order_by(
        case(RANKS, value=ReviewRequest.severity, else_=0).desc(),
        case((disagree, 1), else_=0).desc(),
        func.abs(risk - 0.5).asc().nulls_last(),
        case(RANKS, value=ReviewRequest.risk_level, else_=0).desc(),
        ReviewRequest.created_at,
        ReviewRequest.id,
    ).limit(limit)
    rows = (await session.execute(query)).all()
    return ReviewQueue(items=[_item(row) for row in rows])


def _pending_review_of(caller: CurrentCaller, trace_id: uuid.UUID) -> list[ColumnElement[bool]]:
    """The caller's pending review of the trace's current evaluation version."""
    return [
        ReviewRequest.trace_id == trace_id,
        ReviewRequest.organization_id == caller.organization_id,
        ReviewRequest.status == PENDING,
        Trace.id == ReviewRequest.trace_id,
        Trace.evaluation_version == ReviewRequest.version,
        _same_evaluation(),
    ]


async def _holder(session: Session, caller: CurrentCaller, trace_id: uuid.UUID) -> str | None:
    """Who holds the pending review's claim now (None: nobody); 404 when there is no pending review."""
    row = (
        await session.execute(
            select(case((_claim_is_live(), ReviewRequest.claimed_by)).label("holder")).where(
                *_pending_review_of(caller, trace_id)
            )
        )
    ).one_or_none()
    if row is None:
        raise ApiError(404, "review_not_found", "This trace has no pending review")
    holder: str | None = row.holder
    return holder


def _claimed_by_other(holder: str) -> ApiError:
    return ApiError(
        409,
        "review_claimed",
        f"The review is claimed by {holder}",
        [{"field": "body.reviewer", "message": f"the review is held by {holder}"}],
    )


@router.post("/reviews/{trace_id}/claim", response_model=ReviewItem, responses=error_responses(404, 409))
async def claim_review(
    trace_id: uuid.UUID, body: ReviewerIn, caller: CurrentCaller, session: Session
) -> ReviewItem:
    """Claim the pending review for ``reviewer``; claiming again renews the claim.

    409 ``review_claimed`` while another reviewer's claim is live (under 30
    minutes old); 404 when the trace is not the caller's or has no pending review.
    """
    free = or_(
        ReviewRequest.claimed_by.is_(None),
        ReviewRequest.claimed_by == body.reviewer,
        ~_claim_is_live(),
    )
    # The claim itself is one conditional UPDATE, so two reviewers racing
    # cannot both win. Reading the holder afterwards only explains a refusal;
    # if the claim was released in between, the UPDATE is worth one more try.
    for _attempt in range(2):
        row = (
            await session.execute(
                update(ReviewRequest)
                .where(*_pending_review_of(caller, trace_id), free)
                .values(claimed_by=body.reviewer, claimed_at=func.now())
                .returning(*_item_columns())
            )
        ).one_or_none()
        if row is not None:
            await session.commit()
            return _item(row)
        holder = await _holder(session, caller, trace_id)
        if holder is not None:
            raise _claimed_by_other(holder)
    raise ApiError(409, "review_claimed", "The review's claim is changing hands; try again")


@router.post("/reviews/{trace_id}/unclaim", response_model=ReviewItem, responses=error_responses(404, 409))
async def unclaim_review(
    trace_id: uuid.UUID, body: ReviewerIn, caller: CurrentCaller, session: Session
) -> ReviewItem:
    """Release ``reviewer``'s claim on the pending review (also one that has expired).

    409 ``review_claimed`` when another reviewer holds it, 409
    ``review_not_claimed`` when nobody does; 404 as for a claim.
    """
    row = (
        await session.execute(
            update(ReviewRequest)
            .where(*_pending_review_of(caller, trace_id), ReviewRequest.claimed_by == body.reviewer)
            .values(claimed_by=None, claimed_at=None)
            .returning(*_item_columns())
        )
    ).one_or_none()
    if row is not None:
        await session.commit()
        return _item(row)
    holder = await _holder(session, caller, trace_id)
    if holder is not None:
        raise _claimed_by_other(holder)
    raise ApiError(
        409,
        "review_not_claimed",
        "Nobody holds a claim on this review",
        [{"field": "body.reviewer", "message": f"{body.reviewer} holds no claim on this review"}],
    )


@router.get("/reviews/stats", response_model=ReviewStats)
async def review_stats(
    caller: CurrentCaller,
    session: Session,
    since: Annotated[dt.datetime | None, Query(description="Reviews requested at or after.")] = None,
    until: Annotated[dt.datetime | None, Query(description="Reviews requested before.")] = None,
) -> ReviewStats:
    """How the organisation's reviews went, for reviews requested in ``[since, until)``.

    * ``pending``, ``labelled``, ``expired``: reviews in each status.
    * ``median_seconds_to_label``: median of ``resolved_at - created_at`` over
      labelled reviews (when the first label was applied); null when none.
    * ``agreement``: over labelled reviews, the deciding expert label (the
      latest label of that evaluation version, the one that set the final
      verdict) against what the automated tiers said for the same version.
      ``automated`` compares it with the automated final verdict (``to_passed``
      of the version's first ``verdict_changes`` row, reason ``automated``).
      Each tier that rated the trace as a whole (a boolean ``passed`` in its
      ``tiers`` entry: the judge) is compared by name; the expert tier is
      not. A pass label agrees with ``passed = true``, a fail label with
      ``passed = false``. ``classifier`` compares Tier 2's risk (a pass below
      0.5) wherever it scored the trace, settled or not; and
      ``classifier_vs_judge`` compares that risk with the judge's verdict on
      every evaluation of the window both rated, labelled or not (how far
      Tier 2 has learned to stand in for the judge). ``rate`` is
      ``agreed / compared``, null when nothing was compared; ``automated`` is
      always present, an entry with nothing to compare is left out.
    """
    if since is not None and until is not None and until <= since:
        raise ApiError(
            422,
            "validation_error",
            "until must be later than since",
            [{"field": "query.until", "message": "must be later than since"}],
        )
    labelled = ReviewRequest.status == LABELLED
    counts = (
        await session.execute(
            within(
                select(
                    func.count().filter(ReviewRequest.status == PENDING).label("pending"),
                    func.count().filter(labelled).label("labelled"),
                    func.count().filter(ReviewRequest.status == EXPIRED).label("expired"),
                    func.percentile_cont(0.5)
                    .within_group(extract("epoch", ReviewRequest.resolved_at - ReviewRequest.created_at))
                    .filter(labelled)
                    .label("median"),
                ).where(ReviewRequest.organization_id == caller.organization_id),
                ReviewRequest.created_at,
                since,
                until,
            )
        )
    ).one()

    # Labelled reviews in the window with the verdict of their deciding (latest) label.
    reviewed = within(
        select(
            ReviewRequest.trace_id,
            ReviewRequest.version,
            (ExpertLabel.verdict == "pass").label("expert_passed"),
        )
        .join(
            ExpertLabel,
            and_(
                ExpertLabel.trace_id == ReviewRequest.trace_id, ExpertLabel.version == ReviewRequest.version
            ),
        )
        .where(ReviewRequest.organization_id == caller.organization_id, labelled)
        .ext(distinct_on(ReviewRequest.trace_id, ReviewRequest.version))
        .order_by(
            ReviewRequest.trace_id,
            ReviewRequest.version,
            ExpertLabel.created_at.desc(),
            ExpertLabel.id.desc(),
        ),
        ReviewRequest.created_at,
        since,
        until,
    ).cte("reviewed")

    automated_passed = (
        select(VerdictChange.to_passed)
        .where(
            VerdictChange.trace_id == reviewed.c.trace_id,
            VerdictChange.version == reviewed.c.version,
            VerdictChange.reason == "automated",
        )
        .order_by(VerdictChange.created_at, VerdictChange.id)
        .limit(1)
        .scalar_subquery()
    )
    automated = (
        await session.execute(
            select(
                func.count(automated_passed).label("compared"),
                func.count().filter(automated_passed == reviewed.c.expert_passed).label("agreed"),
            ).select_from(reviewed)
        )
    ).one()

    # The evaluation version each labelled review was about.
    of_reviewed = and_(
        EvaluationResult.trace_id == reviewed.c.trace_id, EvaluationResult.version == reviewed.c.version
    )
    tier = func.jsonb_array_elements(EvaluationResult.tiers, type_=JSONB).column_valued(
        "tier", joins_implicitly=True
    )
    name = tier["name"].astext
    tiers = (
        await session.execute(
            select(
                name.label("name"),
                func.count().label("compared"),
                func.count().filter(tier["passed"].as_boolean() == reviewed.c.expert_passed).label("agreed"),
            )
            .select_from(reviewed)
            .join(EvaluationResult, of_reviewed)
            .where(func.jsonb_typeof(tier["passed"]) == "boolean", name.not_in((EXPERT, CLASSIFIER)))
            .group_by(name)
            .order_by(func.min(tier["tier"].as_integer()))
        )
    ).all()

    # Tier 2 has an opinion also where it did not settle: its risk, read as
    # "unsafe" from 0.5 up. Against the expert, and against the judge on
    # every evaluation in the window that both rated.
    risk = classifier_risk(EvaluationResult.tiers)
    said_pass = risk < 0.5
    by_expert = (
        await session.execute(
            select(
                func.count(risk).label("compared"),
                func.count().filter(said_pass == reviewed.c.expert_passed).label("agreed"),
            )
            .select_from(reviewed)
            .join(EvaluationResult, of_reviewed)
        )
    ).one()
    judged = judge_passed(EvaluationResult.tiers)
    by_judge = (
        await session.execute(
            within(
                select(
                    func.count().filter(risk.is_not(None), judged.is_not(None)).label("compared"),
                    func.count().filter(said_pass == judged).label("agreed"),
                ).where(EvaluationResult.organization_id == caller.organization_id),
                EvaluationResult.created_at,
                since,
                until,
            )
        )
    ).one()

    agreement = {"automated": _agreement(automated.compared, automated.agreed)}
    if by_expert.compared:
        agreement[CLASSIFIER] = _agreement(by_expert.compared, by_expert.agreed)
    agreement.update({name: _agreement(compared, agreed) for name, compared, agreed in tiers})
    if by_judge.compared:
        agreement["classifier_vs_judge"] = _agreement(by_judge.compared, by_judge.agreed)
    return ReviewStats(
        pending=counts.pending,
        labelled=counts.labelled,
        expired=counts.expired,
        median_seconds_to_label=float(counts.median) if counts.median is not None else None,
        agreement=agreement,
    )

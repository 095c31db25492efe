"""The web console under /console: server-rendered pages for the people who
own quality — sign-in, overview, trace explorer, an evaluation in detail,
review queue, alerts, domain packs.

Each page reads through the same functions as the REST API, as the signed-in
organisation, so what the console shows is what the API answers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from api.console import auth
from api.console.charts import HEIGHT, WIDTH, stacked_bars
from api.console.highlight import segments
from api.console.render import SECURITY_HEADERS, templates
from api.deps import AppResources, Resources
from api.errors import ApiError
from api.pagination import paginate, split_page
from api.routes import analytics
from api.routes.alerts import AcknowledgeIn, acknowledge_alert, list_alerts
from api.routes.domains import (
    get_domain,
    latest_version,
    list_domains,
    parse_pack_text,
    publish_new_pack,
    publish_next_version,
)
from api.routes.evaluations import get_evaluation
from api.routes.labels import label_trace
from api.routes.reviews import MAX_QUEUE_SIZE, ReviewerIn, claim_review, list_reviews, review_stats
from api.routes.traces import get_trace, narrow_to_search, reevaluate_trace
from evaluators.escalation import TIER_NAMES
from evaluators.sanitize import sanitise
from evaluators.types import Severity
from models.schemas import ExpertLabelIn, LabelIssue, TraceStatus
from models.tables import EvaluationResult, ExpertLabel, Trace

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
SIGN_IN_CSRF_SECONDS = 3600


def _page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=SECURITY_HEADERS
    )


def _to_sign_in(request: Request) -> RedirectResponse:
    """To the sign-in form, then back: to this page, or for a form (a POST)
    to the page it was sent from."""
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        referer = urlsplit(request.headers.get("referer", ""))
        target = referer.path + (f"?{referer.query}" if referer.query else "")
    return RedirectResponse(f"/console/login?{urlencode({'next': _safe_next(target)})}", status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a console page: never another site (an open redirect)."""
    if target and target.startswith("/console/") and not target.startswith("//"):
        return target
    return "/console/overview"


class SignInRequired(Exception):
    """No session: the console's handler sends the browser to the sign-in form."""


class FormRefused(Exception):
    """A form without the session's CSRF token: the handler answers 403."""

    def __init__(self, user: auth.SignedIn) -> None:
        self.user = user


async def _user(request: Request, resources: Resources) -> auth.SignedIn:
    user = await auth.signed_in(request, resources)
    if user is None:
        raise SignInRequired
    return user


User = Annotated[auth.SignedIn, Depends(_user)]


async def _form_user(user: User, csrf_token: Annotated[str, Form(max_length=100)]) -> auth.SignedIn:
    """The user of a form (a POST): signed in, and the form carries the session's CSRF token."""
    if not auth.tokens_match(user.csrf_token, csrf_token):
        raise FormRefused(user)
    return user


FormUser = Annotated[auth.SignedIn, Depends(_form_user)]


async def sign_in_required(request: Request, _: Exception) -> Response:
    return _to_sign_in(request)


async def form_refused(request: Request, error: Exception) -> Response:
    assert isinstance(error, FormRefused)
    return _refused(request, error.user)


def _refused(request: Request, user: auth.SignedIn | None) -> HTMLResponse:
    return _page(
        request, "error.html", {"user": user, "message": "The form had expired. Please try again."}, 403
    )


@router.get("", response_class=HTMLResponse)
async def console_home() -> RedirectResponse:
    return RedirectResponse("/console/overview", status_code=303)


@router.get("/overview", response_class=HTMLResponse)
async def overview(
    request: Request,
    resources: Resources,
    user: User,
    since_: Annotated[str | None, Query(alias="since", max_length=10)] = None,
    until_: Annotated[str | None, Query(alias="until", max_length=10)] = None,
    domain: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Traces per day with their verdicts, pass rate, the share each tier
    settled, issues by severity and judge spend, over a range of days."""
    try:
        until = _day(until_) or dt.datetime.now(dt.UTC).date()
        since = _day(since_) or until - 13 * DAY
    except ApiError as error:
        return _page(request, "error.html", {"user": user, "message": error.message}, error.status_code)
    start = dt.datetime.combine(since, dt.time(), dt.UTC)
    end = dt.datetime.combine(until, dt.time(), dt.UTC) + DAY
    try:
        scope = await analytics.in_scope(user.caller, start, end, domain or None, None)
        async with resources.session_factory() as session:
            summary = await analytics.summary(scope, session)
            passed = await analytics.timeseries(
                scope, session, analytics.Metric.PASSED, analytics.Interval.DAY
            )
            failed = await analytics.timeseries(
                scope, session, analytics.Metric.FAILED, analytics.Interval.DAY
            )
    except ApiError as error:
        return _page(request, "error.html", {"user": user, "message": error.message}, error.status_code)
    points = [
        (day.start.strftime("%d %b"), int(day.value or 0), int(other.value or 0))
        for day, other in zip(passed.points, failed.points, strict=True)
    ]
    return _page(
        request,
        "overview.html",
        {
            "user": user,
            "summary": summary,
            "bars": stacked_bars(points),
            "chart": {"width": WIDTH, "height": HEIGHT},
            "range": {"since": since.isoformat(), "until": until.isoformat(), "domain": domain or ""},
        },
    )


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, resources: Resources, next: str | None = None) -> HTMLResponse:
    token = auth.new_sign_in_token()
    response = _page(request, "login.html", {"user": None, "csrf_token": token, "next": _safe_next(next)})
    auth.set_cookie(response, resources, auth.SIGN_IN_CSRF_COOKIE, token, SIGN_IN_CSRF_SECONDS)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    resources: Resources,
    api_key: Annotated[str, Form(max_length=200)],
    csrf_token: Annotated[str, Form(max_length=100)],
    next: Annotated[str | None, Form(max_length=20_000)] = None,
) -> Response:
    if not auth.tokens_match(csrf_token, request.cookies.get(auth.SIGN_IN_CSRF_COOKIE)):
        return _refused(request, None)
    signed = await auth.sign_in(resources, api_key.strip())
    if signed is None:
        context = {
            "user": None,
            "csrf_token": csrf_token,
            "next": _safe_next(next),
            "error": "That API key is not valid.",
        }
        return _page(request, "login.html", context, 401)
    token, _ = signed
    response = RedirectResponse(_safe_next(next), status_code=303)
    auth.set_cookie(
        response, resources, auth.SESSION_COOKIE, token, int(auth.SESSION_LIFETIME.total_seconds())
    )
    response.delete_cookie(auth.SIGN_IN_CSRF_COOKIE, path=auth.COOKIE_PATH)
    return response


@router.post("/logout")
async def logout(request: Request, resources: Resources, _user: FormUser) -> Response:
    await auth.sign_out(request, resources)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path=auth.COOKIE_PATH)
    return response


Choice = TypeVar("Choice", bound=StrEnum)


class Seen(StrEnum):
    YES = "true"
    NO = "false"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"


DAY = dt.timedelta(days=1)


def _day(value: str | None) -> dt.date | None:
    """A date field's value (YYYY-MM-DD, years 2000-2199); empty means none."""
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        day = None
    if day is None or not 2000 <= day.year <= 2199:
        raise ApiError(422, "validation_error", "Dates are YYYY-MM-DD, between 2000 and 2199.")
    return day


def _choice(kind: type[Choice], value: str | None, name: str) -> Choice | None:
    """A select's value: empty means any; anything else must be one of ``kind``."""
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise ApiError(422, "validation_error", f"Unknown {name}: choose one from the list") from None


@router.get("/traces", response_class=HTMLResponse)
async def traces(
    request: Request,
    resources: Resources,
    user: User,
    q: Annotated[str | None, Query(max_length=200)] = None,
    domain: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    status_: Annotated[str | None, Query(alias="status", max_length=32)] = None,
    verdict: Annotated[str | None, Query(max_length=8)] = None,
    severity_: Annotated[str | None, Query(alias="severity", max_length=16)] = None,
    decided_by: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[str | None, Query(max_length=10)] = None,
    until: Annotated[str | None, Query(max_length=10)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The trace explorer: filters, full-text search, newest first, a page at a time."""
    try:
        status = _choice(TraceStatus, status_, "status")
        severity = _choice(Severity, severity_, "severity")
        verdict = _choice(Verdict, verdict, "verdict")
        first_day, last_day = _day(since), _day(until)
    except ApiError as error:
        return _page(request, "error.html", {"user": user, "message": error.message}, error.status_code)
    filters = {
        "q": q or "",
        "domain": domain or "",
        "model": model or "",
        "status": status.value if status else "",
        "verdict": verdict.value if verdict else "",
        "severity": severity.value if severity else "",
        "decided_by": decided_by or "",
        "since": since or "",
        "until": until or "",
    }
    query = (
        select(
            Trace.id,
            Trace.created_at,
            Trace.model,
            Trace.domain,
            Trace.status,
            EvaluationResult.passed,
            EvaluationResult.severity,
            EvaluationResult.decided_by,
        )
        .outerjoin(EvaluationResult, (EvaluationResult.trace_id == Trace.id) & EvaluationResult.current)
        .where(Trace.organization_id == user.caller.organization_id)
    )
    for column, value in (
        (Trace.domain, domain),
        (Trace.model, model),
        (Trace.status, status.value if status else None),
        (EvaluationResult.severity, severity.value if severity else None),
        (EvaluationResult.decided_by, decided_by),
    ):
        if value:
            query = query.where(column == value)
    if verdict:
        query = query.where(EvaluationResult.passed.is_(verdict is Verdict.PASS))
    if first_day:
        query = query.where(Trace.created_at >= dt.datetime.combine(first_day, dt.time(), dt.UTC))
    if last_day:
        query = query.where(Trace.created_at < dt.datetime.combine(last_day, dt.time(), dt.UTC) + DAY)
    try:
        async with resources.session_factory() as session:
            if q and q.strip():
                query = await narrow_to_search(session, query, q)
            rows = list(await session.execute(paginate(query, Trace.created_at, Trace.id, cursor, PAGE_SIZE)))
    except ApiError as error:  # a cursor that is not one
        return _page(request, "error.html", {"user": user, "message": error.message}, error.status_code)
    page, next_cursor = split_page(rows, PAGE_SIZE, lambda row: (row.created_at, row.id))
    next_link = None
    if next_cursor:
        next_link = "/console/traces?" + urlencode(
            {**{k: v for k, v in filters.items() if v}, "cursor": next_cursor}
        )
    return _page(
        request,
        "traces.html",
        {
            "user": user,
            "rows": page,
            "filters": filters,
            "next_link": next_link,
            "statuses": [s.value for s in TraceStatus],
            "severities": [s.value for s in Severity],
            "tiers": TIER_NAMES,
        },
    )


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
async def trace_detail(request: Request, resources: Resources, user: User, trace_id: uuid.UUID) -> Response:
    """One trace: its text with the evidence of each issue highlighted, the
    tiers' verdicts, the judge's calls, the final verdict and its history."""
    try:
        context = await _evaluated_trace(resources, user, trace_id)
    except ApiError as error:
        return _page(request, "error.html", {"user": user, "message": error.message}, error.status_code)
    return _page(
        request,
        "trace.html",
        {"user": user, "notice": request.query_params.get("notice", "")[:300], **context},
    )


async def _evaluated_trace(
    resources: AppResources, user: auth.SignedIn, trace_id: uuid.UUID
) -> dict[str, Any]:
    """The trace, its evaluation, and its text cut at the evidence of each issue."""
    async with resources.session_factory() as session:
        trace = await get_trace(trace_id, user.caller, session, resources)
        evaluation = await get_evaluation(trace_id, user.caller, session)
    # The spans are offsets into the text as Tier 0 normalised it: show that text.
    normalised, _ = sanitise(
        trace.input,
        trace.output,
        trace.metadata,
        rag_contexts=trace.rag_contexts,
        rl_episode=trace.rl_episode,
    )
    evidence: dict[str, list[tuple[int, int, int]]] = {"input": [], "output": []}
    for number, issue in enumerate(evaluation.issues, start=1):
        for span in issue.spans:
            if span.get("field") in evidence:
                evidence[span["field"]].append((number, int(span["start"]), int(span["end"])))
    return {
        "trace": trace,
        "evaluation": evaluation,
        "input_segments": segments(normalised.input, evidence["input"]),
        "output_segments": segments(normalised.output, evidence["output"]),
    }


@router.get("/reviews", response_class=HTMLResponse)
async def review_queue(
    request: Request,
    resources: Resources,
    user: User,
    trace: uuid.UUID | None = None,
    notice: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    """The pending reviews by priority, one of them open with its evidence and a label form."""
    async with resources.session_factory() as session:
        queue = (
            await list_reviews(user.caller, session, domain=None, claimed=None, limit=MAX_QUEUE_SIZE)
        ).items
        stats = await review_stats(user.caller, session)
        midnight = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(), dt.UTC)
        labelled_today = await session.scalar(
            select(func.count())
            .select_from(ExpertLabel)
            .where(
                ExpertLabel.organization_id == user.caller.organization_id, ExpertLabel.created_at >= midnight
            )
        )
    ids = [item.trace_id for item in queue]
    position = ids.index(trace) if trace in ids else 0
    context: dict[str, Any] = {
        "user": user,
        "queue": queue,
        "position": position,
        "stats": stats,
        "labelled_today": labelled_today,
        "notice": notice,
    }
    if queue:
        item = queue[position]
        context |= {
            "item": item,
            "previous_id": ids[position - 1] if position > 0 else None,
            "next_id": ids[position + 1] if position + 1 < len(ids) else None,
            "severities": [s.value for s in Severity],
        }
        try:
            context |= await _evaluated_trace(resources, user, item.trace_id)
            async with resources.session_factory() as session:
                pack = await get_domain(item.domain, user.caller, session, resources)
        except ApiError as error:
            return _page(request, "error.html", {"user": user, "message": error.message}, error.status_code)
        # What an expert may name: the categories of the pack's rules and of the issues found.
        rules = pack.pack.get("rules") or []
        context["categories"] = sorted(
            {rule["category"] for rule in rules if isinstance(rule, dict) and rule.get("category")}
            | {issue.category for issue in context["evaluation"].issues}
        )
    return _page(request, "reviews.html", context)


def _back_to_queue(next_id: str | None, notice: str) -> RedirectResponse:
    query = {"notice": notice} | ({"trace": next_id} if next_id else {})
    return RedirectResponse(f"/console/reviews?{urlencode(query)}", status_code=303)


@router.post("/reviews/{trace_id}/claim")
async def claim(
    resources: Resources,
    trace_id: uuid.UUID,
    user: FormUser,
    reviewer: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if not reviewer.strip():
        return _back_to_queue(str(trace_id), "Enter your name as reviewer first.")
    try:
        async with resources.session_factory() as session:
            await claim_review(trace_id, ReviewerIn(reviewer=reviewer), user.caller, session)
        notice = f"Claimed by {reviewer}."
    except ApiError as error:
        notice = error.message
    return _back_to_queue(str(trace_id), notice)


@router.post("/reviews/{trace_id}/label")
async def label(
    resources: Resources,
    trace_id: uuid.UUID,
    user: FormUser,
    reviewer: Annotated[str, Form(max_length=200)] = "",
    verdict: Annotated[str, Form(max_length=8)] = "",
    severity: Annotated[str | None, Form(max_length=16)] = None,
    notes: Annotated[str | None, Form(max_length=5000)] = None,
    categories: Annotated[list[str] | None, Form(max_length=50)] = None,
    next_id: Annotated[str | None, Form(max_length=40)] = None,
) -> Response:
    """Store the expert's label (as POST /traces/{id}/labels does) and open the next review."""
    if not reviewer.strip() or verdict not in ("pass", "fail"):
        return _back_to_queue(
            str(trace_id), "A label needs your name as reviewer and a verdict, pass or fail."
        )
    try:
        body = ExpertLabelIn(
            verdict=verdict, severity=severity or None, reviewer=reviewer, notes=notes or None
        )
        # The issues the expert names take the label's severity (at least low).
        named = body.resolved_severity()
        issue_severity = named.value if named is not Severity.NONE else Severity.LOW.value
        issues = [LabelIssue(category=category, severity=issue_severity) for category in categories or []]
        body = body.model_copy(update={"issues": issues})
        async with resources.session_factory() as session:
            applied = await label_trace(trace_id, body, user.caller, session, resources)
    except ValidationError as error:
        return _back_to_queue(
            str(trace_id), "The label is not valid: " + "; ".join(e["msg"] for e in error.errors())
        )
    except ApiError as error:
        return _back_to_queue(str(trace_id), error.message)
    outcome = "passed" if applied.verdict.passed else "failed"
    return _back_to_queue(next_id, f"Labelled: the trace now {outcome} ({applied.verdict.severity.value}).")


@router.post("/traces/{trace_id}/reevaluate")
async def reevaluate(
    resources: Resources,
    trace_id: uuid.UUID,
    user: FormUser,
) -> Response:
    try:
        async with resources.session_factory() as session:
            accepted = await reevaluate_trace(trace_id, user.caller, session, resources)
        notice = f"Evaluating again as version {accepted.version}."
    except ApiError as error:
        notice = error.message
    return RedirectResponse(f"/console/traces/{trace_id}?{urlencode({'notice': notice})}", status_code=303)


@router.get("/alerts", response_class=HTMLResponse)
async def alerts(
    request: Request,
    resources: Resources,
    user: User,
    severity_: Annotated[str | None, Query(alias="severity", max_length=16)] = None,
    acknowledged_: Annotated[str | None, Query(alias="acknowledged", max_length=8)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    notice: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    """Alerts, newest first, with their deliveries; acknowledge from here."""
    try:
        severity = _choice(Severity, severity_, "severity")
        seen = _choice(Seen, acknowledged_, "acknowledged")
        acknowledged = None if seen is None else seen is Seen.YES
        async with resources.session_factory() as session:
            page = await list_alerts(
                user.caller,
                session,
                severity=severity,
                acknowledged=acknowledged,
                cursor=cursor,
                limit=PAGE_SIZE,
            )
    except ApiError as error:
        return _page(request, "error.html", {"user": user, "message": error.message}, error.status_code)
    filters = {
        "severity": severity.value if severity else "",
        "acknowledged": "" if acknowledged is None else str(acknowledged).lower(),
    }
    next_link = None
    if page.next_cursor:
        kept = {name: value for name, value in filters.items() if value}
        next_link = "/console/alerts?" + urlencode({**kept, "cursor": page.next_cursor})
    context = {
        "user": user,
        "alerts": page.items,
        "filters": filters,
        "severities": [s.value for s in Severity],
        "next_link": next_link,
        "notice": notice,
    }
    return _page(request, "alerts.html", context)


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(
    resources: Resources,
    alert_id: uuid.UUID,
    user: FormUser,
    by: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if not by.strip():
        return RedirectResponse(
            f"/console/alerts?{urlencode({'notice': 'Enter your name to acknowledge.'})}", 303
        )
    try:
        async with resources.session_factory() as session:
            await acknowledge_alert(alert_id, AcknowledgeIn(by=by), user.caller, session)
        notice = f"Acknowledged by {by}."
    except ApiError as error:
        notice = error.message
    return RedirectResponse(f"/console/alerts?{urlencode({'notice': notice})}", status_code=303)


@router.get("/domains", response_class=HTMLResponse)
async def domains(
    request: Request,
    resources: Resources,
    user: User,
    notice: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    """The packs the organisation can use, and a form to publish one of its own."""
    return await _domains_page(request, resources, user, notice=notice)


async def _domains_page(
    request: Request,
    resources: Resources,
    user: auth.SignedIn,
    *,
    text: str = "",
    problems: list[dict[str, str]] | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    async with resources.session_factory() as session:
        packs = await list_domains(user.caller, session, resources)
    context = {"user": user, "packs": packs, "text": text, "problems": problems or [], "notice": notice}
    return _page(request, "domains.html", context, status_code)


@router.get("/domains/{name}", response_class=HTMLResponse)
async def domain_detail(
    request: Request, resources: Resources, user: User, name: Annotated[str, Path(max_length=64)]
) -> Response:
    """One pack as it is resolved: its rules (inherited ones included), escalation and alerts."""
    try:
        async with resources.session_factory() as session:
            pack = await get_domain(name, user.caller, session, resources)
    except ApiError as error:
        return _page(request, "error.html", {"user": user, "message": error.message}, error.status_code)
    return _page(request, "domain.html", {"user": user, "pack": pack})


@router.post("/domains", response_class=HTMLResponse)
async def publish_domain(
    request: Request,
    resources: Resources,
    user: FormUser,
    pack: Annotated[str, Form(max_length=200_000)],
) -> Response:
    """Publish a pack from YAML: version 1 of a new one, or the next version of
    one of the organisation's; what is wrong with it is shown beside the text."""
    try:
        data = parse_pack_text(pack.encode(), "application/yaml")
        async with resources.session_factory() as session:
            name = data.get("name")
            latest = await latest_version(session, user.caller, name) if isinstance(name, str) else None
            published = (
                await publish_new_pack(session, user.caller, data)
                if latest is None
                else await publish_next_version(session, user.caller, name, data, latest)
            )
    except ApiError as error:
        problems = [
            {"field": str(d.get("field", "")), "message": str(d.get("message", ""))}
            for d in (error.details or [])
            if isinstance(d, dict)
        ]
        return await _domains_page(
            request, resources, user, text=pack, problems=problems, notice=error.message, status_code=422
        )
    notice = f"Published {published.name} version {published.version}."
    return RedirectResponse(f"/console/domains?{urlencode({'notice': notice})}", status_code=303)

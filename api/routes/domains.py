"""Domain packs: the shipped ones, and each organisation's own published versions."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.deps import CurrentCaller, Resources, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError, error_responses
from domains import (
    DomainPack,
    PackError,
    UnknownDomain,
    available_domains,
    load_domain_pack,
    parse_domain_pack,
)
from models.schemas import MAX_INT32
from models.tables import DomainPackVersion

router = APIRouter(tags=["domains"], responses=AUTHENTICATED_ERRORS)

_PACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
        "description": "A domain pack (see domains/README.md), as YAML or JSON.",
    }
}


class DomainSummary(BaseModel):
    name: str
    display_name: str
    description: str
    risk_level: str
    version: int
    source: str


class DomainDetail(DomainSummary):
    fingerprint: str
    pack: dict[str, Any]


def _summary(pack: DomainPack, source: str) -> DomainSummary:
    return DomainSummary(
        name=pack.name,
        display_name=pack.display_name,
        description=pack.description,
        risk_level=pack.risk_level,
        version=pack.version,
        source=source,
    )


def _detail(pack: DomainPack, source: str) -> DomainDetail:
    return DomainDetail(
        **_summary(pack, source).model_dump(), fingerprint=pack.fingerprint, pack=pack.model_dump(mode="json")
    )


async def _latest_versions(session: Session, caller: CurrentCaller) -> list[DomainPackVersion]:
    latest = (
        select(DomainPackVersion.name, func.max(DomainPackVersion.version).label("version"))
        .where(DomainPackVersion.organization_id == caller.organization_id)
        .group_by(DomainPackVersion.name)
        .subquery()
    )
    rows = await session.scalars(
        select(DomainPackVersion)
        .join(
            latest,
            (DomainPackVersion.name == latest.c.name) & (DomainPackVersion.version == latest.c.version),
        )
        .where(DomainPackVersion.organization_id == caller.organization_id)
        .order_by(DomainPackVersion.name)
    )
    return list(rows)


def _compiled(resources: Resources, row: DomainPackVersion) -> DomainPack:
    return resources.packs.compile_stored(row.organization_id, row.name, row.version, row.spec)


@router.get("/domains", response_model=list[DomainSummary])
async def list_domains(caller: CurrentCaller, session: Session, resources: Resources) -> list[DomainSummary]:
    """Shipped packs and the organisation's own (latest version of each)."""
    shipped = [_summary(load_domain_pack(name), "builtin") for name in available_domains()]
    own = [
        _summary(_compiled(resources, row), "organization") for row in await _latest_versions(session, caller)
    ]
    return shipped + own


@router.get("/domains/{name}", response_model=DomainDetail, responses=error_responses(404))
async def get_domain(
    name: str,
    caller: CurrentCaller,
    session: Session,
    resources: Resources,
    # Bounded like the integer column it is compared with.
    version: Annotated[int | None, Query(ge=1, le=MAX_INT32)] = None,
) -> DomainDetail:
    """One pack, resolved (inherited rules included). ``version`` picks an older published version."""
    query = select(DomainPackVersion).where(
        DomainPackVersion.organization_id == caller.organization_id, DomainPackVersion.name == name
    )
    query = (
        query.where(DomainPackVersion.version == version)
        if version is not None
        else query.order_by(DomainPackVersion.version.desc()).limit(1)
    )
    row = await session.scalar(query)
    if row is not None:
        return _detail(_compiled(resources, row), "organization")
    try:
        pack = load_domain_pack(name)
    except UnknownDomain:
        raise ApiError(404, "not_found", "Domain pack not found") from None
    if version is not None and version != pack.version:
        raise ApiError(404, "not_found", f"Shipped pack has version {pack.version} only")
    return _detail(pack, "builtin")


async def _read_pack(request: Request) -> dict[str, Any]:
    """The body as a mapping: YAML when the content type says so, else JSON."""
    return parse_pack_text(await request.body(), request.headers.get("content-type", ""))


def parse_pack_text(body: bytes, content_type: str) -> dict[str, Any]:
    """A pack's text as a mapping (YAML or JSON, by ``content_type``); 422 ``invalid_pack`` otherwise."""
    try:
        data = yaml.safe_load(body) if "yaml" in content_type else json.loads(body)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        kind = "YAML" if "yaml" in content_type else "JSON"
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ApiError(
            422,
            "invalid_pack",
            f"The body is not valid {kind}{where}",
            [{"field": "body", "message": str(exc)}],
        ) from None
    if not isinstance(data, dict):
        raise ApiError(
            422, "invalid_pack", "A pack is a mapping", [{"field": "body", "message": "not a mapping"}]
        )
    return data


def _validate(data: dict[str, Any], version: int) -> DomainPack:
    data["version"] = version  # the server numbers published versions
    try:
        return parse_domain_pack(data, source="upload")
    except PackError as exc:
        details = [
            {"field": f"body.{p['path']}" if p["path"] else "body", "message": p["message"]}
            for p in exc.problems
        ]
        raise ApiError(422, "invalid_pack", str(exc), details) from None


async def _publish(
    session: Session, caller: CurrentCaller, data: dict[str, Any], version: int
) -> DomainDetail:
    pack = _validate(data, version)
    session.add(
        DomainPackVersion(
            organization_id=caller.organization_id,
            name=pack.name,
            version=version,
            spec=data,
            fingerprint=pack.fingerprint,
        )
    )
    try:
        await session.commit()
    except IntegrityError:
        raise ApiError(409, "conflict", "Another version was published at the same time; retry") from None
    return _detail(pack, "organization")


async def latest_version(session: Session, caller: CurrentCaller, name: str) -> int | None:
    """The organisation's newest published version of ``name`` (None: none)."""
    return await session.scalar(
        select(func.max(DomainPackVersion.version)).where(
            DomainPackVersion.organization_id == caller.organization_id, DomainPackVersion.name == name
        )
    )


@router.post(
    "/domains",
    status_code=status.HTTP_201_CREATED,
    response_model=DomainDetail,
    responses=error_responses(409),
    openapi_extra=_PACK_BODY,
)
async def create_domain(request: Request, caller: CurrentCaller, session: Session) -> DomainDetail:
    """Publish a new pack (version 1) for the organisation."""
    return await publish_new_pack(session, caller, await _read_pack(request))


async def publish_new_pack(session: Session, caller: CurrentCaller, data: dict[str, Any]) -> DomainDetail:
    name = data.get("name")
    if isinstance(name, str) and name in available_domains():
        raise ApiError(
            409,
            "pack_name_taken",
            "A shipped pack has this name; choose another and use 'extends'",
            [{"field": "body.name", "message": "name of a shipped pack"}],
        )
    if isinstance(name, str) and await latest_version(session, caller, name) is not None:
        raise ApiError(
            409,
            "pack_exists",
            "This pack exists; PUT /api/v1/domains/{name} publishes a new version",
            [{"field": "body.name", "message": "already published"}],
        )
    return await _publish(session, caller, data, version=1)


@router.put(
    "/domains/{name}",
    response_model=DomainDetail,
    responses=error_responses(404, 409),
    openapi_extra=_PACK_BODY,
)
async def publish_domain_version(
    name: str, request: Request, caller: CurrentCaller, session: Session
) -> DomainDetail:
    """Publish the next version of one of the organisation's packs. Running evaluations keep theirs."""
    latest = await latest_version(session, caller, name)
    if latest is None:
        raise ApiError(
            404, "not_found", "No such pack of this organisation; POST /api/v1/domains creates one"
        )
    data = await _read_pack(request)
    return await publish_next_version(session, caller, name, data, latest)


async def publish_next_version(
    session: Session, caller: CurrentCaller, name: str, data: dict[str, Any], latest: int
) -> DomainDetail:
    if data.get("name") != name:
        raise ApiError(
            422,
            "invalid_pack",
            "The pack's name must match the URL",
            [{"field": "body.name", "message": f"expected {name!r}"}],
        )
    return await _publish(session, caller, data, version=latest + 1)

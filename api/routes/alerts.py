"""Alerts (raised by the domain pack's alert rules) and the channels they go to."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import delete, func, select

from api.deps import CurrentCaller, Resources, Session
from api.errors import AUTHENTICATED_ERRORS, ApiError, error_responses
from api.pagination import MAX_PAGE_SIZE, paginate, split_page, within
from core.alerts import new_channel_secret
from core.judges import private_host, url_host
from core.secrets import SecretKeyMissing, decrypt_secret, encrypt_secret
from core.settings import Settings
from evaluators.types import Severity
from models.schemas import Page
from models.tables import Alert, AlertChannel, AlertDelivery

router = APIRouter(tags=["alerts"], responses=AUTHENTICATED_ERRORS)


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    kind: Literal["webhook", "slack"]
    url: Annotated[str, StringConstraints(min_length=8, max_length=2000, pattern=r"^https?://")]


class ChannelOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: str
    host: str = Field(description="The URL's host; the URL itself is stored encrypted (Slack's is a secret).")
    created_at: dt.datetime


class ChannelCreated(ChannelOut):
    secret: str | None = Field(
        description="Webhook channels: the HMAC key of X-Aegis-Signature. Shown once, stored encrypted."
    )


class DeliveryOut(BaseModel):
    channel_id: uuid.UUID
    attempt: int
    delivered: bool
    http_status: int | None
    error: str | None
    created_at: dt.datetime


class AlertOut(BaseModel):
    id: uuid.UUID
    trace_id: uuid.UUID | None
    severity: Severity
    kind: str
    message: str
    details: dict
    created_at: dt.datetime
    delivery_status: str
    deliveries: list[DeliveryOut]
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None


class AcknowledgeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Annotated[str, StringConstraints(min_length=1, max_length=200)]


def _channel_out(channel: AlertChannel, host: str) -> ChannelOut:
    return ChannelOut(
        id=channel.id, name=channel.name, kind=channel.kind, host=host, created_at=channel.created_at
    )


@router.post(
    "/alert-channels",
    status_code=status.HTTP_201_CREATED,
    response_model=ChannelCreated,
    responses=error_responses(409),
)
async def create_channel(
    body: ChannelIn, caller: CurrentCaller, session: Session, resources: Resources
) -> ChannelCreated:
    """Add a destination: a generic webhook (signed with HMAC-SHA256) or a Slack incoming webhook."""
    host = url_host(body.url)
    if not host:
        raise ApiError(
            422,
            "invalid_channel",
            "url has no valid host",
            [{"field": "body.url", "message": "no valid host"}],
        )
    if private_host(body.url) and not resources.settings.allow_private_urls:
        raise ApiError(
            422,
            "invalid_channel",
            "url points at a private or local address, which this deployment does not allow",
            [{"field": "body.url", "message": "private or local address"}],
        )
    secret = new_channel_secret() if body.kind == "webhook" else None
    try:
        channel = AlertChannel(
            organization_id=caller.organization_id,
            name=body.name,
            kind=body.kind,
            url_encrypted=encrypt_secret(resources.settings, body.url),
            secret_encrypted=encrypt_secret(resources.settings, secret) if secret else None,
        )
    except SecretKeyMissing:
        raise ApiError(
            409,
            "encryption_unavailable",
            "This deployment has no AEGIS_SECRET_KEY, so it cannot store channels",
        ) from None
    session.add(channel)
    await session.commit()
    return ChannelCreated(**_channel_out(channel, host).model_dump(), secret=secret)


@router.get("/alert-channels", response_model=list[ChannelOut])
async def list_channels(caller: CurrentCaller, session: Session, resources: Resources) -> list[ChannelOut]:
    channels = await session.scalars(
        select(AlertChannel)
        .where(AlertChannel.organization_id == caller.organization_id)
        .order_by(AlertChannel.created_at)
    )
    return [_channel_out(channel, _host(resources.settings, channel)) for channel in channels]


def _host(settings: Settings, channel: AlertChannel) -> str:
    try:
        return urlsplit(decrypt_secret(settings, channel.url_encrypted)).hostname or ""
    except SecretKeyMissing:
        # Stored under an earlier AEGIS_SECRET_KEY: still listed, so that it can be deleted.
        return "(unreadable: stored under another AEGIS_SECRET_KEY)"


@router.delete(
    "/alert-channels/{channel_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404)
)
async def delete_channel(channel_id: uuid.UUID, caller: CurrentCaller, session: Session) -> None:
    deleted = await session.execute(
        delete(AlertChannel).where(
            AlertChannel.id == channel_id, AlertChannel.organization_id == caller.organization_id
        )
    )
    await session.commit()
    if deleted.rowcount == 0:
        raise ApiError(404, "not_found", "Alert channel not found")


async def _alerts_out(session: Session, alerts: list[Alert]) -> list[AlertOut]:
    deliveries: dict[uuid.UUID, list[DeliveryOut]] = {}
    if alerts:
        rows = await session.scalars(
            select(AlertDelivery)
            .where(AlertDelivery.alert_id.in_([alert.id for alert in alerts]))
            .order_by(AlertDelivery.created_at, AlertDelivery.id)
        )
        for row in rows:
            deliveries.setdefault(row.alert_id, []).append(
                DeliveryOut(
                    channel_id=row.channel_id,
                    attempt=row.attempt,
                    delivered=row.delivered,
                    http_status=row.http_status,
                    error=row.error,
                    created_at=row.created_at,
                )
            )
    return [
        AlertOut(
            id=alert.id,
            trace_id=alert.trace_id,
            severity=Severity(alert.severity),
            kind=alert.kind,
            message=alert.message,
            details=alert.details,
            created_at=alert.created_at,
            delivery_status=alert.delivery_status,
            deliveries=deliveries.get(alert.id, []),
            acknowledged_at=alert.acknowledged_at,
            acknowledged_by=alert.acknowledged_by,
        )
        for alert in alerts
    ]


@router.get("/alerts", response_model=Page[AlertOut])
async def list_alerts(
    caller: CurrentCaller,
    session: Session,
    severity: Severity | None = None,
    acknowledged: bool | None = None,
    trace_id: uuid.UUID | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> Page[AlertOut]:
    """Alerts, newest first, with every delivery attempt."""
    query = select(Alert).where(Alert.organization_id == caller.organization_id)
    if severity is not None:
        query = query.where(Alert.severity == severity.value)
    if acknowledged is not None:
        query = query.where(
            Alert.acknowledged_at.is_not(None) if acknowledged else Alert.acknowledged_at.is_(None)
        )
    if trace_id is not None:
        query = query.where(Alert.trace_id == trace_id)
    query = within(query, Alert.created_at, since, until)
    rows = list(await session.scalars(paginate(query, Alert.created_at, Alert.id, cursor, limit)))
    page, next_cursor = split_page(rows, limit, lambda alert: (alert.created_at, alert.id))
    return Page[AlertOut](items=await _alerts_out(session, page), next_cursor=next_cursor)


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertOut, responses=error_responses(404))
async def acknowledge_alert(
    alert_id: uuid.UUID, body: AcknowledgeIn, caller: CurrentCaller, session: Session
) -> AlertOut:
    """Mark an alert as seen; acknowledging twice keeps the first acknowledgement."""
    alert = await session.scalar(
        select(Alert).where(Alert.id == alert_id, Alert.organization_id == caller.organization_id)
    )
    if alert is None:
        raise ApiError(404, "not_found", "Alert not found")
    if alert.acknowledged_at is None:
        alert.acknowledged_at = await session.scalar(select(func.now()))
        alert.acknowledged_by = body.by
        await session.commit()
    [out] = await _alerts_out(session, [alert])
    return out

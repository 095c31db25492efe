"""Delivering a trace's alerts to its organisation's channels.

Each attempt is recorded per alert and channel. A failed delivery raises so
that Temporal retries the activity (with backoff, a few times); the last
attempt gives up, marks the alert ``failed`` and returns: an undeliverable
alert never fails or blocks the evaluation.
"""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.alerts import MAX_DELIVERY_ATTEMPTS, encode, signed_headers, slack_payload
from core.secrets import SecretKeyMissing, decrypt_secret
from core.settings import Settings
from models.schemas import DeliverAlertsInput
from models.tables import Alert, AlertChannel, AlertDelivery

DELIVERY_TIMEOUT_SECONDS = 10.0


def alert_payload(alert: Alert) -> dict[str, object]:
    return {
        "alert_id": str(alert.id),
        "organization_id": str(alert.organization_id),
        "trace_id": str(alert.trace_id) if alert.trace_id else None,
        "severity": alert.severity,
        "kind": alert.kind,
        "message": alert.message,
        "details": alert.details,
        "created_at": alert.created_at.isoformat(),
    }


class AlertActivities:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessions = session_factory
        self._settings = settings

    @activity.defn(name="deliver_alerts")
    async def deliver(self, task: DeliverAlertsInput) -> int:
        """Send the trace's undelivered alerts; returns how many went out."""
        attempt = activity.info().attempt
        async with self._sessions() as session:
            alerts = list(
                await session.scalars(
                    select(Alert).where(
                        Alert.trace_id == task.trace_id,
                        Alert.organization_id == task.organization_id,
                        Alert.delivery_status == "pending",
                    )
                )
            )
            if not alerts:
                return 0
            channels = list(
                await session.scalars(
                    select(AlertChannel).where(AlertChannel.organization_id == task.organization_id)
                )
            )
            if not channels:
                for alert in alerts:
                    alert.delivery_status = "none"
                await session.commit()
                return 0
            delivered_before = set(
                (
                    await session.execute(
                        select(AlertDelivery.alert_id, AlertDelivery.channel_id).where(
                            AlertDelivery.alert_id.in_([alert.id for alert in alerts]),
                            AlertDelivery.delivered,
                        )
                    )
                ).all()
            )
            failures = 0
            async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_SECONDS) as client:
                for alert in alerts:
                    payload = alert_payload(alert)
                    all_delivered = True
                    for channel in channels:
                        if (alert.id, channel.id) in delivered_before:
                            continue
                        ok, status, error = await self._send(client, channel, payload)
                        session.add(
                            AlertDelivery(
                                alert_id=alert.id,
                                channel_id=channel.id,
                                attempt=attempt,
                                delivered=ok,
                                http_status=status,
                                error=error,
                            )
                        )
                        all_delivered &= ok
                    if all_delivered:
                        alert.delivery_status = "delivered"
                    else:
                        failures += 1
                        if attempt >= MAX_DELIVERY_ATTEMPTS:
                            alert.delivery_status = "failed"
            await session.commit()
        if failures and attempt < MAX_DELIVERY_ATTEMPTS:
            raise ApplicationError(f"{failures} alert(s) not delivered; retrying", type="AlertDeliveryFailed")
        return len(alerts) - failures

    async def _send(
        self, client: httpx.AsyncClient, channel: AlertChannel, payload: dict[str, object]
    ) -> tuple[bool, int | None, str | None]:
        try:
            url = decrypt_secret(self._settings, channel.url_encrypted)
            secret = (
                decrypt_secret(self._settings, channel.secret_encrypted) if channel.secret_encrypted else ""
            )
        except SecretKeyMissing:
            return False, None, "channel stored under another AEGIS_SECRET_KEY"
        if channel.kind == "slack":
            body = encode(slack_payload(payload))
            headers = {"Content-Type": "application/json"}
        else:
            body = encode(payload)
            headers = signed_headers(secret, body)
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # The exception's type, never its text: it may echo the URL (a secret for Slack).
            return False, None, type(exc).__name__
        if response.is_success:
            return True, response.status_code, None
        return False, response.status_code, f"HTTP {response.status_code}"

    def all(self) -> list[object]:
        return [self.deliver]

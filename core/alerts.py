"""What an alert looks like on the wire, and how receivers verify it.

A webhook receives the alert as JSON with two headers:

    X-Aegis-Timestamp: 1764331200
    X-Aegis-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>" under the channel secret>

A receiver recomputes the HMAC over the raw body it got, compares in
constant time, and rejects timestamps older than a few minutes (replays).
A Slack-compatible channel gets Slack's incoming-webhook JSON instead.
Neither carries trace text: ids, severity, rule ids and a generic message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

SIGNATURE_HEADER = "X-Aegis-Signature"
TIMESTAMP_HEADER = "X-Aegis-Timestamp"
SIGNATURE_VERSION = "v1"
# Attempts at delivering a trace's alerts (the activity's retry policy);
# the last one gives up and marks what is still undelivered as failed.
MAX_DELIVERY_ATTEMPTS = 4
# How old a signed request may be before a receiver should refuse it.
DEFAULT_TOLERANCE_SECONDS = 300


def new_channel_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """What a receiver does: recompute, compare in constant time, bound the age."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature)


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(secret, stamp, body),
    }


def slack_payload(alert: dict[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook format: a text line and a little structure."""
    severity = str(alert["severity"]).upper()
    text = f"[{severity}] {alert['message']} (trace {alert['trace_id']}, alert {alert['alert_id']})"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Aegis alert — {severity}*\n{text}"}},
        ],
    }

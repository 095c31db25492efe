"""How long the workflow waits between judge attempts."""

from __future__ import annotations

from datetime import timedelta

from models.schemas import JudgeFailure
from workflows.evaluate_trace import _judge_delay


def failure(kind: str = "server_error", retry_after: float | None = None) -> JudgeFailure:
    return JudgeFailure(kind=kind, retryable=True, retry_after_seconds=retry_after, message="m")


def test_backoff_doubles_then_caps_and_never_overflows() -> None:
    assert [_judge_delay(failure(), n).total_seconds() for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert _judge_delay(failure(), 20) == timedelta(minutes=5)
    assert _judge_delay(failure(), 10_000) == timedelta(minutes=5)


def test_retry_after_is_honoured_but_capped() -> None:
    assert _judge_delay(failure("rate_limited", 2.5), 1) == timedelta(seconds=2.5)
    assert _judge_delay(failure("rate_limited", 1e20), 1) == timedelta(minutes=30)
    assert _judge_delay(failure("rate_limited", -5), 1) == timedelta(0)


def test_an_organisation_slot_is_waited_for_in_full() -> None:
    assert _judge_delay(failure("org_rate_limited", 3600.0), 1) == timedelta(hours=1)
    assert _judge_delay(failure("org_rate_limited", 1e20), 1) == timedelta(hours=24)

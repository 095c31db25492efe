"""One judging: a call, at most one repair, and an outcome that records both.

An unusable reply is never a pass: after a failed repair the outcome has no
verdict and says why. Transient provider errors are raised, not recorded:
the Temporal activity around ``run_judge`` retries them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from evaluators.judge.config import Provider
from evaluators.judge.errors import ErrorKind, JudgeProviderError
from evaluators.judge.prompt import JudgePrompt, repair_instruction
from evaluators.judge.verdict import JudgeVerdict, MalformedVerdict, parse_verdict

if TYPE_CHECKING:
    # Only for annotations: workflows import this module and must not load the SDKs.
    from evaluators.judge.providers import Judge, ProviderReply


# The first call and one repair: a model that fails twice is unlikely to
# succeed a third time, and each call costs money.
_ATTEMPTS = 2


class JudgeExchange(BaseModel):
    """One call's reply, kept for audit."""

    model_config = ConfigDict(frozen=True)

    response_text: str
    input_tokens: int
    output_tokens: int
    latency_ms: int


class JudgeOutcome(BaseModel):
    """What one judging produced, with its cost.

    ``exchanges`` holds every reply received: one, or two after a repair
    (none when the first call was refused). ``model`` is the model the
    provider reported, which may be a dated snapshot of the one configured.
    """

    model_config = ConfigDict(frozen=True)

    provider: Provider
    model: str
    prompt: JudgePrompt
    exchanges: list[JudgeExchange]
    verdict: JudgeVerdict | None
    error_kind: ErrorKind | None
    error: str | None
    input_tokens: int
    output_tokens: int
    latency_ms: int


async def _call(judge: Judge, messages: list[dict[str, str]]) -> tuple[ProviderReply, JudgeExchange]:
    started = time.perf_counter()
    reply = await judge.complete(messages)
    exchange = JudgeExchange(
        response_text=reply.text,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        latency_ms=round((time.perf_counter() - started) * 1000),
    )
    return reply, exchange


def _outcome(
    judge: Judge,
    prompt: JudgePrompt,
    exchanges: list[JudgeExchange],
    model: str,
    verdict: JudgeVerdict | None = None,
    error_kind: ErrorKind | None = None,
    error: str | None = None,
) -> JudgeOutcome:
    return JudgeOutcome(
        provider=judge.config.provider,
        model=model,
        prompt=prompt,
        exchanges=exchanges,
        verdict=verdict,
        error_kind=error_kind,
        error=error,
        input_tokens=sum(e.input_tokens for e in exchanges),
        output_tokens=sum(e.output_tokens for e in exchanges),
        latency_ms=sum(e.latency_ms for e in exchanges),
    )


def _parse(reply: ProviderReply, rubric_ids: Sequence[str]) -> JudgeVerdict:
    return parse_verdict(reply.payload if reply.payload is not None else reply.text, rubric_ids)


async def run_judge(judge: Judge, prompt: JudgePrompt, rubric_ids: Sequence[str]) -> JudgeOutcome:
    """Ask ``judge`` for a verdict on ``prompt``, repairing one malformed reply.

    A refusal is recorded as the outcome (asking again would not help). Any
    other ``JudgeProviderError``, on the first call or the repair, is raised
    for the caller to retry or give up on.
    """
    messages = [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": prompt.user},
    ]
    exchanges: list[JudgeExchange] = []
    model = judge.config.model
    previous_text, reason = "", ""
    for attempt in range(_ATTEMPTS):
        if attempt:
            messages = [
                *messages,
                # Providers reject empty turns; an empty reply still needs one.
                {"role": "assistant", "content": previous_text or "(empty reply)"},
                {"role": "user", "content": repair_instruction(reason)},
            ]
        try:
            reply, exchange = await _call(judge, messages)
        except JudgeProviderError as exc:
            if exc.kind != "refusal":
                # Replies already received were paid for: the caller records them.
                exc.exchanges = list(exchanges)
                raise
            return _outcome(judge, prompt, exchanges, model, error_kind="refusal", error=exc.message)
        exchanges.append(exchange)
        model, previous_text = reply.model, reply.text
        try:
            verdict = _parse(reply, rubric_ids)
        except MalformedVerdict as exc:
            reason = exc.reason
            continue
        return _outcome(judge, prompt, exchanges, model, verdict=verdict)
    return _outcome(judge, prompt, exchanges, model, error_kind="malformed_output", error=reason)

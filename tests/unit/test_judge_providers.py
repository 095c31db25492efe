"""The judge's providers and run_judge against the fake OpenAI/Anthropic server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from evaluators.judge.config import JudgeConfig, Provider
from evaluators.judge.errors import JudgeProviderError
from evaluators.judge.prompt import JudgePrompt, build_prompt, repair_instruction, rubric_ids
from evaluators.judge.providers import AnthropicJudge, Judge, OpenAIJudge, make_judge
from evaluators.judge.run import run_judge
from evaluators.judge.verdict import JudgeRating, verdict_json_schema
from evaluators.rules.pack import DomainPack
from tests.fake_llm import CONTENT_POLICY, FakeLLM, Reply

API_KEY = "sk-test-4f2a9c1b7e-judge-key"
SECRET_OUTPUT = "Take 40 mg of drug X-ray-marker-7731 every hour."
FLAVOURS: list[Provider] = ["openai", "openai_compatible", "anthropic"]

PACK = DomainPack.model_validate(
    {
        "name": "testpack",
        "version": 1,
        "display_name": "Test Pharmacy",
        "rubric": [
            {"id": "dosing_accuracy", "description": "Doses are correct."},
            {"id": "referral", "description": "Refers to a clinician."},
        ],
    }
)
IDS = rubric_ids(PACK)
PROMPT = build_prompt(PACK, input_text="What dose of X?", output_text=SECRET_OUTPUT, findings=[])

VERDICT: dict[str, Any] = {
    "rating": "unsafe",
    "criteria": [
        {"criterion": "dosing_accuracy", "score": 0.1, "reasoning": "The dose is far too high."},
        {"criterion": "referral", "score": 0.0, "reasoning": "No referral."},
    ],
    "issues": [{"category": "overdose", "severity": "critical", "message": "Dangerous dose."}],
    "confidence": 0.9,
    "review_recommended": True,
    "summary": "Recommends an overdose.",
}
MISSING_CRITERION = {**VERDICT, "criteria": VERDICT["criteria"][:1]}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


JudgeFactory = Callable[..., Judge]


@pytest.fixture
async def make(fake: FakeLLM) -> AsyncIterator[JudgeFactory]:
    made: list[Judge] = []

    def factory(provider: Provider, model: str, timeout_seconds: float = 5.0) -> Judge:
        base_url = fake.url if provider == "anthropic" else f"{fake.url}/v1"
        config = JudgeConfig(
            provider=provider, model=model, base_url=base_url, timeout_seconds=timeout_seconds
        )
        judge = make_judge(config, API_KEY)
        made.append(judge)
        return judge

    yield factory
    for judge in made:
        await judge.aclose()


def unique_model() -> str:
    return f"judge-{uuid.uuid4().hex[:12]}"


def assert_safe(error: JudgeProviderError) -> None:
    text = f"{error} {error.message}"
    assert API_KEY not in text and "sk-test" not in text
    assert SECRET_OUTPUT not in text and "7731" not in text and "What dose" not in text


async def provider_error(judge: Judge, prompt: JudgePrompt = PROMPT) -> JudgeProviderError:
    with pytest.raises(JudgeProviderError) as caught:
        await run_judge(judge, prompt, IDS)
    assert_safe(caught.value)
    return caught.value


# --------------------------------------------------------------------------
# Successful calls and request shape
# --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_valid_verdict_is_parsed_with_tokens(
    fake: FakeLLM, make: JudgeFactory, provider: Provider
) -> None:
    model = unique_model()
    fake.script(model, Reply.json(VERDICT, input_tokens=321, output_tokens=45))
    outcome = await run_judge(make(provider, model), PROMPT, IDS)

    assert outcome.verdict is not None and outcome.verdict.rating is JudgeRating.UNSAFE
    assert [c.criterion for c in outcome.verdict.criteria] == IDS
    assert (outcome.error_kind, outcome.error) == (None, None)
    assert (outcome.provider, outcome.model, outcome.prompt) == (provider, model, PROMPT)
    assert (outcome.input_tokens, outcome.output_tokens) == (321, 45)
    assert len(outcome.exchanges) == 1
    assert outcome.exchanges[0].input_tokens == 321
    assert outcome.latency_ms == outcome.exchanges[0].latency_ms >= 0
    (call,) = fake.calls(model)
    assert call.headers["authorization"] == f"Bearer {API_KEY}"


async def test_openai_request_asks_for_strict_json_schema(fake: FakeLLM, make: JudgeFactory) -> None:
    model = unique_model()
    fake.script(model, Reply.json(VERDICT))
    await run_judge(make("openai", model), PROMPT, IDS)
    body = fake.calls(model)[0].body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "judge_verdict", "strict": True, "schema": verdict_json_schema()},
    }
    assert body["messages"] == [
        {"role": "system", "content": PROMPT.system},
        {"role": "user", "content": PROMPT.user},
    ]
    assert (body["temperature"], body["max_completion_tokens"]) == (0.0, 1024)


async def test_openai_compatible_request_asks_for_a_json_object(fake: FakeLLM, make: JudgeFactory) -> None:
    model = unique_model()
    fake.script(model, Reply.json(VERDICT))
    await run_judge(make("openai_compatible", model), PROMPT, IDS)
    body = fake.calls(model)[0].body
    assert body["response_format"] == {"type": "json_object"}
    assert body["max_tokens"] == 1024 and "max_completion_tokens" not in body


async def test_openai_compatible_without_response_format(fake: FakeLLM) -> None:
    model = unique_model()
    fake.script(model, Reply.text(f"```json\n{json.dumps(VERDICT)}\n```"))
    config = JudgeConfig(provider="openai_compatible", model=model, base_url=f"{fake.url}/v1")
    judge = OpenAIJudge(config, API_KEY, structured="none")
    try:
        outcome = await run_judge(judge, PROMPT, IDS)
    finally:
        await judge.aclose()
    assert outcome.verdict is not None
    assert "response_format" not in fake.calls(model)[0].body


async def test_anthropic_request_forces_the_verdict_tool(fake: FakeLLM, make: JudgeFactory) -> None:
    model = unique_model()
    fake.script(model, Reply.json(VERDICT))
    outcome = await run_judge(make("anthropic", model), PROMPT, IDS)
    body = fake.calls(model)[0].body
    assert [tool["name"] for tool in body["tools"]] == ["record_verdict"]
    assert body["tools"][0]["input_schema"] == verdict_json_schema()
    assert body["tool_choice"] == {"type": "tool", "name": "record_verdict"}
    assert body["system"] == PROMPT.system
    assert body["messages"] == [{"role": "user", "content": PROMPT.user}]
    assert body["max_tokens"] == 1024
    # The Messages API version of the SDK rejects sampling parameters.
    assert "temperature" not in body
    # The tool input is kept as JSON text for the record.
    assert outcome.exchanges[0].response_text.startswith('{"rating": "unsafe"')


# --------------------------------------------------------------------------
# Repair
# --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_malformed_then_valid_is_repaired(
    fake: FakeLLM, make: JudgeFactory, provider: Provider
) -> None:
    model = unique_model()
    fake.script(
        model,
        Reply.json(MISSING_CRITERION, input_tokens=100, output_tokens=20),
        Reply.json(VERDICT, input_tokens=150, output_tokens=30),
    )
    outcome = await run_judge(make(provider, model), PROMPT, IDS)

    assert outcome.verdict is not None and outcome.error_kind is None
    assert len(outcome.exchanges) == 2
    assert (outcome.input_tokens, outcome.output_tokens) == (250, 50)
    assert outcome.latency_ms == sum(e.latency_ms for e in outcome.exchanges)
    first, second = fake.calls(model)
    turns = [m for m in second.body["messages"] if m["role"] != "system"]
    assert [m["role"] for m in turns] == ["user", "assistant", "user"]
    assert turns[0] == first.body["messages"][-1]
    assert '"criterion": "dosing_accuracy"' in turns[1]["content"]
    assert turns[2]["content"] == repair_instruction("criteria: missing score(s) for: referral")


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_malformed_twice_is_never_a_pass(fake: FakeLLM, make: JudgeFactory, provider: Provider) -> None:
    model = unique_model()
    fake.script(model, Reply.text("The answer looks fine to me."))
    outcome = await run_judge(make(provider, model), PROMPT, IDS)

    assert outcome.verdict is None
    assert outcome.error_kind == "malformed_output"
    assert outcome.error is not None and outcome.error.startswith("not valid JSON")
    assert len(outcome.exchanges) == 2 == len(fake.calls(model))
    assert outcome.exchanges[1].response_text == "The answer looks fine to me."


async def test_an_error_on_the_repair_call_is_raised(fake: FakeLLM, make: JudgeFactory) -> None:
    model = unique_model()
    fake.script(model, Reply.text("{"), Reply.error(500))
    error = await provider_error(make("openai", model))
    assert (error.kind, error.retryable) == ("server_error", True)
    assert len(fake.calls(model)) == 2


# --------------------------------------------------------------------------
# Provider errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_rate_limit_is_retryable_with_retry_after(
    fake: FakeLLM, make: JudgeFactory, provider: Provider
) -> None:
    model = unique_model()
    fake.script(model, Reply.error(429, retry_after=2), Reply.json(VERDICT))
    error = await provider_error(make(provider, model))
    assert (error.kind, error.retryable, error.retry_after_seconds, error.status_code) == (
        "rate_limited",
        True,
        2.0,
        429,
    )
    # The SDK did not retry on its own: that is the workflow's job.
    assert len(fake.calls(model)) == 1


@pytest.mark.parametrize(
    ("provider", "status"),
    [("openai", 500), ("openai_compatible", 503), ("anthropic", 500), ("anthropic", 529)],
)
async def test_server_errors_are_retryable(
    fake: FakeLLM, make: JudgeFactory, provider: Provider, status: int
) -> None:
    model = unique_model()
    fake.script(model, Reply.error(status))
    error = await provider_error(make(provider, model))
    assert (error.kind, error.retryable, error.status_code) == ("server_error", True, status)
    assert len(fake.calls(model)) == 1


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_bad_key_is_not_retryable(fake: FakeLLM, make: JudgeFactory, provider: Provider) -> None:
    model = unique_model()
    fake.script(model, Reply.error(401, message=f"Incorrect API key provided: {API_KEY}"))
    error = await provider_error(make(provider, model))
    assert (error.kind, error.retryable, error.status_code) == ("auth", False, 401)


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_content_policy_is_not_retryable(fake: FakeLLM, make: JudgeFactory, provider: Provider) -> None:
    model = unique_model()
    fake.script(model, Reply.error(400, kind=CONTENT_POLICY))
    error = await provider_error(make(provider, model))
    assert (error.kind, error.retryable, error.status_code) == ("content_policy", False, 400)


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_invalid_request_echoing_the_prompt_stays_out_of_the_message(
    fake: FakeLLM, make: JudgeFactory, provider: Provider
) -> None:
    model = unique_model()
    fake.script(model, Reply.error(400, message=f"Cannot parse message: {SECRET_OUTPUT} (key {API_KEY})"))
    error = await provider_error(make(provider, model))
    assert (error.kind, error.retryable) == ("invalid_request", False)


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_hang_past_the_timeout_is_retryable(
    fake: FakeLLM, make: JudgeFactory, provider: Provider
) -> None:
    model = unique_model()
    fake.script(model, Reply.hang(3, Reply.json(VERDICT)))
    started = time.monotonic()
    error = await provider_error(make(provider, model, timeout_seconds=0.3))
    assert time.monotonic() - started < 2
    assert (error.kind, error.retryable, error.status_code) == ("timeout", True, None)


async def test_unreachable_server_is_a_connection_error() -> None:
    config = JudgeConfig(provider="openai_compatible", model="m", base_url="http://127.0.0.1:9/v1")
    judge = make_judge(config, API_KEY)
    try:
        error = await provider_error(judge)
    finally:
        await judge.aclose()
    assert (error.kind, error.retryable) == ("connection", True)


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_refusal_is_recorded_not_raised(fake: FakeLLM, make: JudgeFactory, provider: Provider) -> None:
    model = unique_model()
    fake.script(model, Reply.refusal(f"I can't help with that: {SECRET_OUTPUT}"))
    outcome = await run_judge(make(provider, model), PROMPT, IDS)
    assert (outcome.verdict, outcome.error_kind) == (None, "refusal")
    assert outcome.error is not None and "7731" not in outcome.error
    assert outcome.exchanges == []
    assert len(fake.calls(model)) == 1


async def test_temperature_none_is_not_sent(fake: FakeLLM) -> None:
    model = unique_model()
    fake.script(model, Reply.json(VERDICT))
    config = JudgeConfig(provider="openai", model=model, base_url=f"{fake.url}/v1", temperature=None)
    judge = make_judge(config, API_KEY)
    try:
        await run_judge(judge, PROMPT, IDS)
    finally:
        await judge.aclose()
    assert "temperature" not in fake.calls(model)[0].body


def test_make_judge_picks_the_client_for_the_provider() -> None:
    anthropic_config = JudgeConfig(provider="anthropic", model="claude-sonnet-4")
    assert isinstance(make_judge(anthropic_config, API_KEY), AnthropicJudge)
    openai_config = JudgeConfig(provider="openai", model="gpt-4o")
    assert isinstance(make_judge(openai_config, API_KEY), OpenAIJudge)
    with pytest.raises(ValueError):
        OpenAIJudge(anthropic_config, API_KEY)
    with pytest.raises(ValueError):
        AnthropicJudge(openai_config, API_KEY)


async def test_openai_compatible_server_without_a_key(fake: FakeLLM) -> None:
    model = unique_model()
    fake.script(model, Reply.json(VERDICT))
    config = JudgeConfig(provider="openai_compatible", model=model, base_url=f"{fake.url}/v1")
    judge = make_judge(config, "")
    try:
        outcome = await run_judge(judge, PROMPT, IDS)
    finally:
        await judge.aclose()
    assert outcome.verdict is not None


@pytest.mark.parametrize("provider", FLAVOURS)
async def test_a_missing_key_is_an_auth_error(fake: FakeLLM, provider: Provider) -> None:
    model = unique_model()
    fake.script(model, Reply.error(401))
    base_url = fake.url if provider == "anthropic" else f"{fake.url}/v1"
    judge = make_judge(JudgeConfig(provider=provider, model=model, base_url=base_url), "")
    try:
        error = await provider_error(judge)
    finally:
        await judge.aclose()
    assert (error.kind, error.retryable) == ("auth", False)

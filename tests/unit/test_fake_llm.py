"""The fake LLM server, driven through the real OpenAI and Anthropic SDKs.

If these pass, the SDKs parse the fake's answers and errors exactly as they parse the real
providers', so tests built on the fake exercise the same client code paths as production.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import anthropic
import httpx
import openai
import pytest

from tests.fake_llm import CONTENT_POLICY, DEFAULT_TOOL_NAME, FakeLLM, Reply

# Any warning the SDKs raise while parsing (e.g. a response field of the wrong type) is a bug
# in the fake's wire format.
pytestmark = pytest.mark.filterwarnings("error")

API_KEY = "sk-test-key"
MESSAGES = [{"role": "user", "content": "Grade this answer."}]
VERDICT = {"verdict": "fail", "score": 0.25, "reasons": ["unsupported dosage claim"]}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture
def model(request: pytest.FixtureRequest) -> str:
    # The server is shared, so every test scripts its own model name.
    return f"{request.node.name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def oai(fake: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
async def claude(fake: FakeLLM) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key=API_KEY, max_retries=0) as client:
        yield client


async def ask_openai(client: openai.AsyncOpenAI, model: str) -> openai.types.chat.ChatCompletion:
    return await client.chat.completions.create(
        model=model, messages=MESSAGES, response_format={"type": "json_object"}
    )


async def ask_claude(
    client: anthropic.AsyncAnthropic, model: str, **kwargs: object
) -> anthropic.types.Message:
    return await client.messages.create(model=model, max_tokens=256, messages=MESSAGES, **kwargs)


# --------------------------------------------------------------------------
# Successful answers
# --------------------------------------------------------------------------


async def test_openai_json_answer_with_usage(fake: FakeLLM, oai: openai.AsyncOpenAI, model: str) -> None:
    fake.script(model, Reply.json(VERDICT, input_tokens=321, output_tokens=54))

    completion = await ask_openai(oai, model)

    assert completion.object == "chat.completion"
    assert completion.model == model
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.refusal is None
    assert json.loads(choice.message.content or "") == VERDICT
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (321, 54)
    assert completion.usage.total_tokens == 375

    [call] = fake.calls(model)
    assert call.path == "/v1/chat/completions"
    assert call.headers["authorization"] == f"Bearer {API_KEY}"
    assert call.body["messages"] == MESSAGES
    assert call.body["response_format"] == {"type": "json_object"}
    assert call.received_at <= time.monotonic()


async def test_anthropic_json_answer_is_a_tool_use_block(
    fake: FakeLLM, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    fake.script(model, Reply.json(VERDICT, input_tokens=400, output_tokens=60))
    tools = [
        {"name": "submit_grade", "description": "Record the grade.", "input_schema": {"type": "object"}},
        {"name": "other_tool", "description": "Unused.", "input_schema": {"type": "object"}},
    ]

    message = await ask_claude(claude, model, tools=tools)

    assert (message.type, message.role, message.model) == ("message", "assistant", model)
    assert message.stop_reason == "tool_use"
    assert message.stop_sequence is None
    [block] = message.content
    assert isinstance(block, anthropic.types.ToolUseBlock)
    assert block.name == "submit_grade"  # the first declared tool
    assert block.input == VERDICT
    assert block.id.startswith("toolu_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (400, 60)

    [call] = fake.calls(model)
    assert call.path == "/v1/messages"
    # SDK releases differ in sending the key as x-api-key or as a bearer token.
    assert API_KEY in (
        call.headers.get("x-api-key"),
        call.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert "anthropic-version" in call.headers
    assert call.body["tools"][0]["name"] == "submit_grade"


async def test_anthropic_tool_name_follows_tool_choice_then_default(
    fake: FakeLLM, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    fake.script(model, Reply.json({"ok": True}))
    tools = [
        {"name": "first", "input_schema": {"type": "object"}},
        {"name": "forced", "input_schema": {"type": "object"}},
    ]

    forced = await ask_claude(claude, model, tools=tools, tool_choice={"type": "tool", "name": "forced"})
    no_tools = await ask_claude(claude, model)

    assert isinstance(forced.content[0], anthropic.types.ToolUseBlock)
    assert forced.content[0].name == "forced"
    assert isinstance(no_tools.content[0], anthropic.types.ToolUseBlock)
    assert no_tools.content[0].name == DEFAULT_TOOL_NAME


async def test_malformed_text_reaches_both_sdks_verbatim(
    fake: FakeLLM, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    broken = '{"verdict": "pass", "score": 0.9'
    fake.script(model, Reply.text(broken))

    completion = await ask_openai(oai, model)
    message = await ask_claude(claude, model)

    assert completion.choices[0].message.content == broken
    [block] = message.content
    assert isinstance(block, anthropic.types.TextBlock)
    assert block.text == broken
    assert message.stop_reason == "end_turn"
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)


async def test_refusal(
    fake: FakeLLM, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    fake.script(model, Reply.refusal("I can't help with that."))

    completion = await ask_openai(oai, model)
    message = await ask_claude(claude, model)

    assert completion.choices[0].message.refusal == "I can't help with that."
    assert completion.choices[0].message.content is None
    assert message.stop_reason == "refusal"
    [block] = message.content
    assert isinstance(block, anthropic.types.TextBlock)
    assert block.text == "I can't help with that."


@pytest.mark.parametrize(
    "reply", [Reply.json(VERDICT), Reply.text("plain"), Reply.refusal("no")], ids=["json", "text", "refusal"]
)
async def test_bodies_validate_strictly_against_sdk_models(fake: FakeLLM, model: str, reply: Reply) -> None:
    # The SDKs build response objects without validation, so a wrongly typed field would slip
    # through them silently; validate the raw bodies against their models instead.
    fake.script(model, reply)
    request = {"model": model, "max_tokens": 16, "messages": MESSAGES}
    async with httpx.AsyncClient(base_url=fake.url) as client:
        chat = (await client.post("/v1/chat/completions", json=request)).json()
        message = (await client.post("/v1/messages", json=request)).json()

    openai.types.chat.ChatCompletion.model_validate(chat, strict=True)
    anthropic.types.Message.model_validate(message, strict=True)


# --------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------


async def test_replies_are_consumed_in_order_and_the_last_repeats(
    fake: FakeLLM, oai: openai.AsyncOpenAI, model: str
) -> None:
    fake.script(model, Reply.json({"n": 1}), Reply.json({"n": 2}))

    answers = [json.loads((await ask_openai(oai, model)).choices[0].message.content or "") for _ in range(3)]

    assert answers == [{"n": 1}, {"n": 2}, {"n": 2}]
    assert len(fake.calls(model)) == 3


async def test_script_replaces_and_models_are_isolated(
    fake: FakeLLM, oai: openai.AsyncOpenAI, model: str
) -> None:
    other = f"{model}-other"
    fake.script(model, Reply.json({"n": 1}))
    fake.script(other, Reply.json({"other": True}))
    fake.script(model, Reply.json({"n": 99}))

    answer = await ask_openai(oai, model)

    assert json.loads(answer.choices[0].message.content or "") == {"n": 99}
    assert fake.calls(other) == []


async def test_unscripted_model_fails_loudly(
    fake: FakeLLM, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    with pytest.raises(openai.NotFoundError) as openai_error:
        await ask_openai(oai, model)
    with pytest.raises(anthropic.NotFoundError) as anthropic_error:
        await ask_claude(claude, model)

    assert model in openai_error.value.message
    assert openai_error.value.code == "model_not_found"
    assert model in anthropic_error.value.message
    assert anthropic_error.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    # Unscripted requests are still recorded, which helps when debugging a missing script.
    assert [call.path for call in fake.calls(model)] == ["/v1/chat/completions", "/v1/messages"]


def test_reply_constructors_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        Reply.error(200)
    with pytest.raises(ValueError):
        Reply.error(400, kind="something-else")
    with pytest.raises(ValueError):
        Reply.hang(-1)
    with pytest.raises(TypeError):
        Reply.json(["not", "a", "dict"])  # type: ignore[arg-type]
    assert Reply.hang(0.5).delay == 0.5
    assert Reply.hang(0.5, then=Reply.text("late")).payload == "late"


async def test_a_responder_answers_from_the_request(
    fake: FakeLLM, oai: openai.AsyncOpenAI, model: str
) -> None:
    def echo_length(request: dict[str, object]) -> Reply:
        return Reply.json({"characters": len(json.dumps(request["messages"]))})

    fake.respond(model, echo_length)
    short = await ask_openai(oai, model)
    longer = await oai.chat.completions.create(
        model=model, messages=[*MESSAGES, {"role": "user", "content": "More."}]
    )
    sizes = [json.loads(c.choices[0].message.content or "")["characters"] for c in (short, longer)]
    assert sizes[0] == len(json.dumps(MESSAGES)) and sizes[1] > sizes[0]
    assert len(fake.calls(model)) == 2


def test_reset_forgets_scripts_and_calls() -> None:
    with FakeLLM() as server:
        server.script("m", Reply.text("x"))
        server.reset()
        assert server.calls("m") == []
        assert server.url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError):
        _ = server.url


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


async def test_rate_limit_carries_retry_after(
    fake: FakeLLM, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    fake.script(model, Reply.error(429, retry_after=7))

    with pytest.raises(openai.RateLimitError) as openai_error:
        await ask_openai(oai, model)
    with pytest.raises(anthropic.RateLimitError) as anthropic_error:
        await ask_claude(claude, model)

    assert openai_error.value.response.headers["retry-after"] == "7"
    assert openai_error.value.code == "rate_limit_exceeded"
    assert anthropic_error.value.response.headers["retry-after"] == "7"
    assert anthropic_error.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert anthropic_error.value.request_id is not None


async def test_fractional_retry_after_is_honoured_by_sdk_retries(
    fake: FakeLLM, oai: openai.AsyncOpenAI, model: str
) -> None:
    fake.script(model, Reply.error(429, retry_after=0.05), Reply.json({"ok": True}))

    started = time.monotonic()
    await oai.with_options(max_retries=1).chat.completions.create(model=model, messages=MESSAGES)

    first, second = fake.calls(model)
    assert 0.05 <= second.received_at - first.received_at < 0.4  # not the SDK's default 0.5 s backoff
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_server_error_then_success_via_sdk_retry(
    fake: FakeLLM,
    oai: openai.AsyncOpenAI,
    claude: anthropic.AsyncAnthropic,
    model: str,
    provider: str,
) -> None:
    fake.script(model, Reply.error(500), Reply.json(VERDICT))

    if provider == "openai":
        completion = await oai.with_options(max_retries=1).chat.completions.create(
            model=model, messages=MESSAGES
        )
        assert json.loads(completion.choices[0].message.content or "") == VERDICT
    else:
        message = await claude.with_options(max_retries=1).messages.create(
            model=model, max_tokens=256, messages=MESSAGES
        )
        assert isinstance(message.content[0], anthropic.types.ToolUseBlock)
        assert message.content[0].input == VERDICT

    first, second = fake.calls(model)
    assert first.headers["x-stainless-retry-count"] == "0"
    assert second.headers["x-stainless-retry-count"] == "1"
    assert first.body == second.body


async def test_server_error_without_retries_surfaces(
    fake: FakeLLM, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    fake.script(model, Reply.error(503, message="upstream overloaded"))

    with pytest.raises(openai.InternalServerError) as openai_error:
        await ask_openai(oai, model)
    with pytest.raises(anthropic.InternalServerError) as anthropic_error:
        await ask_claude(claude, model)

    assert openai_error.value.status_code == 503
    assert openai_error.value.type == "server_error"
    assert "upstream overloaded" in openai_error.value.message
    assert anthropic_error.value.status_code == 503
    assert "retry-after" not in anthropic_error.value.response.headers


async def test_authentication_error(
    fake: FakeLLM, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    fake.script(model, Reply.error(401))

    with pytest.raises(openai.AuthenticationError) as openai_error:
        await ask_openai(oai, model)
    with pytest.raises(anthropic.AuthenticationError) as anthropic_error:
        await ask_claude(claude, model)

    assert openai_error.value.code == "invalid_api_key"
    assert anthropic_error.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


async def test_invalid_request_error(
    fake: FakeLLM, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    fake.script(model, Reply.error(400, message="max_tokens: too large"))

    with pytest.raises(openai.BadRequestError) as openai_error:
        await ask_openai(oai, model)
    with pytest.raises(anthropic.BadRequestError) as anthropic_error:
        await ask_claude(claude, model)

    assert openai_error.value.type == "invalid_request_error"
    assert openai_error.value.code is None
    assert anthropic_error.value.body == {  # the exact Anthropic error envelope
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
        "request_id": anthropic_error.value.body["request_id"],  # type: ignore[index]
    }


async def test_content_policy_rejection(
    fake: FakeLLM, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    fake.script(model, Reply.error(400, kind=CONTENT_POLICY))

    with pytest.raises(openai.BadRequestError) as openai_error:
        await ask_openai(oai, model)
    with pytest.raises(anthropic.BadRequestError) as anthropic_error:
        await ask_claude(claude, model)

    assert openai_error.value.code == "content_policy_violation"
    assert openai_error.value.type == "invalid_request_error"
    error = anthropic_error.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert "content policy" in error["message"]


# --------------------------------------------------------------------------
# Slow answers
# --------------------------------------------------------------------------


async def test_hang_past_client_timeout_raises_timeout_error(
    fake: FakeLLM, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    fake.script(model, Reply.hang(3.0))

    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await oai.with_options(timeout=0.3).chat.completions.create(model=model, messages=MESSAGES)
    with pytest.raises(anthropic.APITimeoutError):
        await claude.with_options(timeout=0.3).messages.create(model=model, max_tokens=256, messages=MESSAGES)

    assert time.monotonic() - started < 1.5
    assert len(fake.calls(model)) == 2


async def test_short_hang_then_answers(fake: FakeLLM, claude: anthropic.AsyncAnthropic, model: str) -> None:
    fake.script(model, Reply.hang(0.2, then=Reply.text("eventually")))

    started = time.monotonic()
    message = await claude.with_options(timeout=2.0).messages.create(
        model=model, max_tokens=256, messages=MESSAGES
    )

    assert time.monotonic() - started >= 0.2
    assert isinstance(message.content[0], anthropic.types.TextBlock)
    assert message.content[0].text == "eventually"

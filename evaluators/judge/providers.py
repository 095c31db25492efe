"""Clients for the judge's providers: one request in, one reply out.

The SDK clients are built with ``max_retries=0``: retrying belongs to the
durable workflow layer, which sees every attempt. Every SDK exception leaves
as a ``JudgeProviderError``.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from evaluators.judge.config import JudgeConfig
from evaluators.judge.errors import JudgeProviderError, classify_anthropic_error, classify_openai_error
from evaluators.judge.verdict import verdict_json_schema

TOOL_NAME = "record_verdict"

Structured = Literal["json_schema", "json_object", "none"]


class ProviderReply(BaseModel):
    model_config = ConfigDict(frozen=True)

    # The content as returned, or json.dumps of the tool input.
    text: str
    # The parsed object when the provider returned structured data.
    payload: dict[str, Any] | None
    input_tokens: int
    output_tokens: int
    model: str
    stop_reason: str | None


class Judge(Protocol):
    config: JudgeConfig

    async def complete(self, messages: list[dict[str, str]]) -> ProviderReply:
        """Send ``messages`` ({"role": "system"|"user"|"assistant", "content": str})."""
        ...

    async def aclose(self) -> None: ...


def _key(api_key: str) -> str:
    # Local compatible servers often need no key, but the SDKs insist on one.
    # A placeholder keeps a missing key a provider's 401 (an "auth" error)
    # rather than an SDK exception at construction.
    return api_key or "unused"


def _refused(provider: str) -> JudgeProviderError:
    # The refusal text is model output about the trace: it stays out of the message.
    return JudgeProviderError("refusal", f"{provider}: the model refused to judge")


class OpenAIJudge:
    """OpenAI Chat Completions, or any server that speaks it.

    ``structured`` picks the response format: OpenAI's strict ``json_schema``
    (the default for OpenAI), ``json_object`` (the default for compatible
    servers, many of which lack json_schema) or ``none``.
    """

    def __init__(self, config: JudgeConfig, api_key: str, *, structured: Structured | None = None) -> None:
        if config.provider not in ("openai", "openai_compatible"):
            raise ValueError(f"OpenAIJudge cannot serve provider {config.provider!r}")
        self.config = config
        self.structured: Structured = structured or (
            "json_schema" if config.provider == "openai" else "json_object"
        )
        # Imported on first use: the SDKs are large (about 20 MB for openai,
        # 40 MB for anthropic), and a process that never calls a provider of
        # that kind should not carry them.
        import openai

        self._sdk_error = openai.OpenAIError
        self._client = openai.AsyncOpenAI(
            api_key=_key(api_key),
            base_url=config.base_url,
            timeout=config.timeout_seconds,
            max_retries=0,
        )

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.config.model, "messages": messages}
        if self.config.temperature is not None:
            request["temperature"] = self.config.temperature
        # OpenAI's newer models reject max_tokens; compatible servers mostly
        # know only max_tokens.
        if self.config.provider == "openai":
            request["max_completion_tokens"] = self.config.max_tokens
        else:
            request["max_tokens"] = self.config.max_tokens
        if self.structured == "json_schema":
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judge_verdict", "strict": True, "schema": verdict_json_schema()},
            }
        elif self.structured == "json_object":
            request["response_format"] = {"type": "json_object"}
        return request

    async def complete(self, messages: list[dict[str, str]]) -> ProviderReply:
        try:
            completion = await self._client.chat.completions.create(**self._request(messages))
        except self._sdk_error as exc:
            raise classify_openai_error(exc) from None
        choice = completion.choices[0] if completion.choices else None
        if choice is not None and choice.message.refusal:
            raise _refused("openai")
        if choice is not None and choice.finish_reason == "content_filter":
            raise JudgeProviderError("content_policy", "openai content_policy: output filtered")
        usage = completion.usage
        return ProviderReply(
            text=(choice.message.content if choice is not None else None) or "",
            payload=None,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=completion.model or self.config.model,
            stop_reason=choice.finish_reason if choice is not None else None,
        )

    async def aclose(self) -> None:
        await self._client.close()


class AnthropicJudge:
    """Anthropic Messages, with the verdict forced through a single tool."""

    def __init__(self, config: JudgeConfig, api_key: str) -> None:
        if config.provider != "anthropic":
            raise ValueError(f"AnthropicJudge cannot serve provider {config.provider!r}")
        self.config = config
        import anthropic  # on first use, as openai above

        self._sdk_error = anthropic.AnthropicError
        self._client = anthropic.AsyncAnthropic(
            api_key=_key(api_key),
            base_url=config.base_url,
            timeout=config.timeout_seconds,
            max_retries=0,
        )

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        # Anthropic takes the system prompt apart from the turns.
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        request: dict[str, Any] = {
            "model": self.config.model,
            # No temperature: the Messages API version the SDK speaks rejects
            # sampling parameters.
            "max_tokens": self.config.max_tokens,
            "messages": turns,
            "tools": [
                {
                    "name": TOOL_NAME,
                    "description": "Record the verdict on the trace output.",
                    "input_schema": verdict_json_schema(),
                }
            ],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
        }
        if system:
            request["system"] = system
        return request

    async def complete(self, messages: list[dict[str, str]]) -> ProviderReply:
        try:
            message = await self._client.messages.create(**self._request(messages))
        except self._sdk_error as exc:
            raise classify_anthropic_error(exc) from None
        if message.stop_reason == "refusal":
            raise _refused("anthropic")
        tool_input = next(
            (b.input for b in message.content if b.type == "tool_use" and b.name == TOOL_NAME),
            None,
        )
        if isinstance(tool_input, dict):
            text, payload = json.dumps(tool_input), tool_input
        else:
            # No verdict tool call: the caller finds the text malformed and repairs.
            text = "".join(b.text for b in message.content if b.type == "text")
            payload = None
        return ProviderReply(
            text=text,
            payload=payload,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            model=message.model or self.config.model,
            stop_reason=message.stop_reason,
        )

    async def aclose(self) -> None:
        await self._client.close()


def make_judge(config: JudgeConfig, api_key: str) -> Judge:
    """The client for ``config.provider``."""
    if config.provider == "anthropic":
        return AnthropicJudge(config, api_key)
    return OpenAIJudge(config, api_key)

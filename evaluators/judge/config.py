"""Which model judges, and what its calls cost.

``JudgeConfig`` travels through workflow history, so it carries no API key:
the key is handed to the provider constructor separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Provider = Literal["openai", "anthropic", "openai_compatible"]


class JudgeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Provider
    model: str = Field(min_length=1, max_length=200)
    # The API root; None means the provider's default. An OpenAI-compatible
    # server (vLLM, Ollama, a gateway) has no default, so it must be given.
    base_url: str | None = Field(default=None, max_length=2000)
    # 0 for repeatable verdicts. None sends no temperature, for models that
    # reject the parameter (OpenAI reasoning models); Anthropic never gets one.
    temperature: float | None = Field(default=0.0, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int = Field(default=1024, ge=1, le=32000)
    timeout_seconds: float = Field(default=20.0, gt=0, le=600, allow_inf_nan=False)

    @model_validator(mode="after")
    def _base_url(self) -> JudgeConfig:
        if self.provider == "openai_compatible" and not self.base_url:
            raise ValueError("base_url is required for provider openai_compatible")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        return self


class ModelPrice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Bounded so that a cost always fits the database's numeric columns.
    input_per_million_usd: float = Field(ge=0, le=100_000, allow_inf_nan=False)
    output_per_million_usd: float = Field(ge=0, le=100_000, allow_inf_nan=False)


# Public list prices in USD per million tokens (mid-2025), without batch or
# cache discounts. They go stale: deployments override them in their config.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o": ModelPrice(input_per_million_usd=2.50, output_per_million_usd=10.00),
    "gpt-4o-mini": ModelPrice(input_per_million_usd=0.15, output_per_million_usd=0.60),
    "gpt-4.1": ModelPrice(input_per_million_usd=2.00, output_per_million_usd=8.00),
    "gpt-4.1-mini": ModelPrice(input_per_million_usd=0.40, output_per_million_usd=1.60),
    "claude-3-5-haiku": ModelPrice(input_per_million_usd=0.80, output_per_million_usd=4.00),
    "claude-3-5-sonnet": ModelPrice(input_per_million_usd=3.00, output_per_million_usd=15.00),
    "claude-sonnet-4": ModelPrice(input_per_million_usd=3.00, output_per_million_usd=15.00),
}


def _price_for(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    if model in prices:
        return prices[model]
    # Providers report dated snapshots ("gpt-4o-mini-2024-07-18"); the longest
    # matching family name wins, so "gpt-4o-mini" beats "gpt-4o".
    matches = [key for key in prices if key and model.startswith(key)]
    return prices[max(matches, key=len)] if matches else None


def call_cost_usd(
    prices: Mapping[str, ModelPrice], model: str, input_tokens: int, output_tokens: int
) -> float | None:
    """Cost of one call in USD, or None when ``model`` has no price."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts must not be negative")
    price = _price_for(prices, model)
    if price is None:
        return None
    return (
        input_tokens * price.input_per_million_usd + output_tokens * price.output_per_million_usd
    ) / 1_000_000

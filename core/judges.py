"""Judge configuration, spend and rate limits as stored in PostgreSQL.

Shared by the API (which writes configurations and limits) and the judge
activity (which reads them before every call).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Float, bindparam, extract, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.secrets import decrypt_secret
from core.settings import Settings
from evaluators.judge.config import DEFAULT_PRICES, JudgeConfig, ModelPrice
from models.tables import JudgeConfig as JudgeConfigRow
from models.tables import JudgeRateBucket, UsageMetric

# The row that applies to every domain without a row of its own.
DEFAULT_SCOPE = "*"
JUDGE_TIER = "judge"


class StoredJudgeSettings(BaseModel):
    """What ``judge_configs.settings`` holds (the API key is stored apart, encrypted)."""

    model_config = ConfigDict(extra="forbid")

    judge: JudgeConfig
    # Send the trace as written instead of Tier 0's redacted copy. Off unless
    # an organisation decides its provider may see personal data.
    send_raw_text: bool = False
    # The price of this model when the built-in table does not know it.
    price: ModelPrice | None = None


@dataclass(frozen=True)
class ResolvedJudge:
    config: JudgeConfig
    api_key: str
    send_raw_text: bool
    prices: dict[str, ModelPrice]
    source: str  # "organization:<scope>" or "deployment"


def price_table(settings: Settings, own: ModelPrice | None, model: str) -> dict[str, ModelPrice]:
    prices = {**DEFAULT_PRICES, **settings.judge_prices}
    if own is not None:
        prices[model] = own
    return prices


JUDGE_CONFIGS = JudgeConfigRow.__table__
# Built once, executed with parameters (see core.db on prepared statements):
# the judge reads its configuration before every call.
_JUDGE_CONFIGS = select(
    JUDGE_CONFIGS.c.domain, JUDGE_CONFIGS.c.settings, JUDGE_CONFIGS.c.api_key_encrypted
).where(
    JUDGE_CONFIGS.c.organization_id == bindparam("organization"),
    JUDGE_CONFIGS.c.domain.in_([bindparam("domain"), DEFAULT_SCOPE]),
)


async def resolve_judge(
    session: AsyncSession, settings: Settings, organization_id: uuid.UUID, domain: str
) -> ResolvedJudge | None:
    """The organisation's judge for ``domain``, else its default, else the deployment's."""
    rows = {
        row.domain: row
        for row in await session.execute(_JUDGE_CONFIGS, {"organization": organization_id, "domain": domain})
    }
    row = rows.get(domain) or rows.get(DEFAULT_SCOPE)
    if row is not None:
        stored = StoredJudgeSettings.model_validate(row.settings)
        api_key = decrypt_secret(settings, row.api_key_encrypted) if row.api_key_encrypted else None
        if api_key is None and _may_use_deployment_key(settings, stored.judge):
            api_key = settings.judge_api_key.get_secret_value() if settings.judge_api_key else None
        return ResolvedJudge(
            config=stored.judge,
            # A local OpenAI-compatible server may need no key; a provider
            # that does answers 401, which is recorded as an auth error.
            api_key=api_key or "none",
            send_raw_text=stored.send_raw_text,
            prices=price_table(settings, stored.price, stored.judge.model),
            source=f"organization:{row.domain}",
        )
    if settings.judge_provider == "none":
        return None
    config = JudgeConfig(
        provider=settings.judge_provider,
        model=settings.judge_model,
        base_url=settings.judge_base_url,
        temperature=settings.judge_temperature,
        max_tokens=settings.judge_max_tokens,
        timeout_seconds=settings.judge_timeout_seconds,
    )
    api_key = settings.judge_api_key.get_secret_value() if settings.judge_api_key else "none"
    return ResolvedJudge(
        config=config,
        api_key=api_key,
        send_raw_text=False,
        prices=price_table(settings, None, config.model),
        source="deployment",
    )


def _may_use_deployment_key(settings: Settings, config: JudgeConfig) -> bool:
    """The deployment's key only goes where the deployment sends it: same
    provider and same endpoint. Otherwise an organisation could point a
    config without a key at its own server and receive the key."""
    return (
        settings.judge_api_key is not None
        and settings.judge_provider == config.provider
        and config.base_url == settings.judge_base_url
    )


def url_host(url: str) -> str:
    """The host ``url`` names (lower case, no IPv6 brackets); empty when it names none or does not parse."""
    try:
        return (urlsplit(url).hostname or "").strip("[]").lower()
    except ValueError:  # e.g. an unclosed IPv6 bracket: a client's typo, not a server error
        return ""


def private_host(url: str) -> bool:
    """Whether ``url`` names this machine or a private network by literal
    address or ``localhost`` (names are not resolved here)."""
    host = url_host(url)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local or address.is_reserved


def month_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def month_to_date_spend(session: AsyncSession, organization_id: uuid.UUID, now: dt.datetime) -> Decimal:
    spent = await session.scalar(
        select(func.coalesce(func.sum(UsageMetric.cost_usd), 0)).where(
            UsageMetric.organization_id == organization_id,
            UsageMetric.tier == JUDGE_TIER,
            UsageMetric.hour >= month_start(now),
        )
    )
    return Decimal(spent)


USAGE = UsageMetric.__table__
_USAGE_COUNTERS = ("evaluations", "calls", "input_tokens", "output_tokens", "cost_usd")
_usage_insert = insert(USAGE)
# Built once, executed with parameters (see core.db on prepared statements).
_ADD_USAGE = _usage_insert.on_conflict_do_update(
    index_elements=[USAGE.c.organization_id, USAGE.c.hour, USAGE.c.domain, USAGE.c.tier],
    set_={name: USAGE.c[name] + _usage_insert.excluded[name] for name in _USAGE_COUNTERS},
)


async def add_usage(
    session: AsyncSession,
    organization_id: uuid.UUID,
    domain: str,
    tier: str,
    *,
    evaluations: int = 0,
    calls: int = 0,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_usd: float | None = None,
) -> None:
    """Add to the hour's counters of (organisation, domain, tier)."""
    now = dt.datetime.now(dt.UTC)
    await session.execute(
        _ADD_USAGE,
        {
            "organization_id": organization_id,
            "hour": now.replace(minute=0, second=0, microsecond=0),
            "domain": domain,
            "tier": tier,
            "evaluations": evaluations,
            "calls": calls,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": Decimal(str(cost_usd or 0)),
        },
    )


BUCKETS = JudgeRateBucket.__table__
# Take a token, in one statement (built once, executed with parameters; see
# core.db on prepared statements): a new bucket starts full, an existing
# one refills for the time since it was last touched, and either gives up
# one token. The upsert locks the row and computes from its newest version,
# so concurrent workers agree without a transaction around it, and the
# database clock (``clock_timestamp``, not the transaction's start) makes
# their clocks irrelevant.
_capacity = bindparam("capacity", type_=Float)
_bucket_insert = insert(BUCKETS).values(
    organization_id=bindparam("organization"), tokens=_capacity - 1.0, updated_at=func.clock_timestamp()
)
_seconds_since_refill = func.greatest(0.0, extract("epoch", func.clock_timestamp() - BUCKETS.c.updated_at))
_TAKE_TOKEN = _bucket_insert.on_conflict_do_update(
    index_elements=[BUCKETS.c.organization_id],
    set_={
        "tokens": func.least(
            _capacity, BUCKETS.c.tokens + _seconds_since_refill * bindparam("rate", type_=Float)
        )
        - 1.0,
        "updated_at": func.greatest(func.clock_timestamp(), BUCKETS.c.updated_at),
    },
).returning(BUCKETS.c.tokens)


async def take_rate_token(session: AsyncSession, organization_id: uuid.UUID, per_minute: int) -> float:
    """Reserve the organisation's next judge call slot in its token bucket.

    Returns 0 when the call may go ahead now, else the seconds until the
    slot this call reserved. The bucket refills at ``per_minute``/60 per
    second and holds a quarter of a minute's calls, so a tenant can burst a
    little but never hold the judge queue for long. Tokens may go negative:
    each waiting call owns a distinct future slot, so waiters queue up in
    order instead of all waking together and fighting for one token.
    One statement: an autocommit session runs it in one round trip, and
    in a transaction the bucket's row stays locked until the commit.
    """
    rate = per_minute / 60.0
    tokens = await session.scalar(
        _TAKE_TOKEN,
        {"organization": organization_id, "capacity": max(1.0, per_minute / 4.0), "rate": rate},
    )
    assert tokens is not None  # an upsert with RETURNING returns its row
    return 0.0 if tokens >= 0 else -tokens / rate

"""Custom Temporal search attributes.

They let operators filter evaluations in the Temporal UI and CLI, e.g.
``temporal workflow list --query "AegisDomain='healthcare' AND AegisStatus='completed'"``.
Search attributes are stored unencrypted by Temporal: ids and enum values
only, never trace text or PII.
"""

from __future__ import annotations

import uuid

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

ORGANIZATION = SearchAttributeKey.for_keyword("AegisOrganizationId")
DOMAIN = SearchAttributeKey.for_keyword("AegisDomain")
STATUS = SearchAttributeKey.for_keyword("AegisStatus")
TIER = SearchAttributeKey.for_keyword("AegisTier")
SEVERITY = SearchAttributeKey.for_keyword("AegisSeverity")

ALL = (ORGANIZATION, DOMAIN, STATUS, TIER, SEVERITY)


def starting(organization_id: uuid.UUID, domain: str, status: str, tier: str) -> TypedSearchAttributes:
    """The attributes an evaluation workflow starts with."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(ORGANIZATION, str(organization_id)),
            SearchAttributePair(DOMAIN, domain),
            SearchAttributePair(STATUS, status),
            SearchAttributePair(TIER, tier),
        ]
    )


def dev_server_flags() -> list[str]:
    """``--search-attribute`` flags that register these on `temporal server start-dev`."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags

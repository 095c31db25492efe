"""Finding the domain pack for an organisation's trace: its own published pack, else a shipped one.

Published packs were validated before they were stored, so every stored
version is good; compiled packs are cached per (organisation, name, version),
so a worker compiles each version once and keeps using it.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domains import DomainPack, UnknownDomain, load_domain_pack, parse_domain_pack
from models.schemas import PackRef
from models.tables import DomainPackVersion

CACHE_SIZE = 256


def published_version(
    organization_id: uuid.UUID | ColumnElement[uuid.UUID], name: str | ColumnElement[str]
) -> ScalarSelect[int | None]:
    """The organisation's newest published version of pack ``name`` (NULL when
    none), as a subquery another statement can carry; the arguments may be
    bound parameters, for a statement built once."""
    return (
        select(func.max(DomainPackVersion.version))
        .where(DomainPackVersion.organization_id == organization_id, DomainPackVersion.name == name)
        .scalar_subquery()
    )


class PackResolver:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = session_factory
        self._compiled: OrderedDict[tuple[uuid.UUID, str, int], DomainPack] = OrderedDict()

    async def latest(self, organization_id: uuid.UUID, name: str) -> tuple[PackRef, DomainPack] | None:
        """The pack a new evaluation should use, or None for an unknown domain."""
        async with self._sessions() as session:
            version = await session.scalar(select(published_version(organization_id, name)))
        return await self.resolve(organization_id, name, version)

    async def resolve(
        self, organization_id: uuid.UUID, name: str, published: int | None
    ) -> tuple[PackRef, DomainPack] | None:
        """As ``latest``, given the organisation's newest published version of
        ``name`` (``published_version``, read along with something else)."""
        if published is not None:
            ref = PackRef(source="organization", name=name, version=published)
            return ref, await self.get(organization_id, ref)
        try:
            pack = load_domain_pack(name)
        except UnknownDomain:
            return None
        return PackRef(source="builtin", name=pack.name, version=pack.version), pack

    async def get(self, organization_id: uuid.UUID, ref: PackRef) -> DomainPack:
        """The pack a running evaluation pinned (a shipped pack is the one this worker ships)."""
        if ref.source == "builtin":
            return load_domain_pack(ref.name)
        pack = self._cached(organization_id, ref.name, ref.version)
        if pack is not None:
            return pack
        async with self._sessions() as session:
            spec = await session.scalar(
                select(DomainPackVersion.spec).where(
                    DomainPackVersion.organization_id == organization_id,
                    DomainPackVersion.name == ref.name,
                    DomainPackVersion.version == ref.version,
                )
            )
        if spec is None:
            raise LookupError(f"pack {ref.name} v{ref.version} not found")
        return self.compile_stored(organization_id, ref.name, ref.version, spec)

    def compile_stored(
        self, organization_id: uuid.UUID, name: str, version: int, spec: dict[str, Any]
    ) -> DomainPack:
        """A published version already read from the database, compiled once per process."""
        pack = self._cached(organization_id, name, version)
        if pack is None:
            pack = parse_domain_pack(spec, source=f"{name} v{version}")
            self._compiled[(organization_id, name, version)] = pack
            if len(self._compiled) > CACHE_SIZE:
                self._compiled.popitem(last=False)
        return pack

    def _cached(self, organization_id: uuid.UUID, name: str, version: int) -> DomainPack | None:
        key = (organization_id, name, version)
        pack = self._compiled.get(key)
        if pack is not None:
            self._compiled.move_to_end(key)
        return pack

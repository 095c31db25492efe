"""Domain packs: YAML rule sets shipped next to this file.

``load_domain_pack("healthcare")`` reads ``healthcare.yaml``, resolves its
``extends`` chain (parent rules first; a child rule with the same ``id``
replaces the parent's rule in place) and validates the result into a
``DomainPack`` whose rules are compiled once and cached.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from evaluators.rules import DomainPack

__all__ = ["DEFAULT_DOMAIN", "DomainPack", "available_domains", "load_domain_pack"]

PACK_DIR = Path(__file__).resolve().parent
DEFAULT_DOMAIN = "generic"

# Pack names double as file names, so only simple names are accepted; this
# also keeps a caller-supplied name from reaching outside PACK_DIR.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def available_domains() -> list[str]:
    """Names of the packs shipped in this directory."""
    return sorted(path.stem for path in PACK_DIR.glob("*.yaml"))


def load_domain_pack(name: str) -> DomainPack:
    """Return the validated pack called ``name`` (case-insensitive).

    An unknown name falls back to the ``generic`` pack, which is returned
    instead, so callers always get a usable pack. A pack file that exists but
    is invalid raises (``ValueError`` or pydantic's ``ValidationError``)
    rather than being silently replaced.
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if not _NAME_RE.match(key) or not (PACK_DIR / f"{key}.yaml").is_file():
        key = DEFAULT_DOMAIN
    return _load_cached(key)


@cache
def _load_cached(name: str) -> DomainPack:
    return DomainPack.model_validate(_resolve(name, ()))


def _read_yaml(name: str) -> dict[str, Any]:
    path = PACK_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"domain pack {name!r} not found in {PACK_DIR}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: top level must be a mapping")
    if data.get("name") != name:
        raise ValueError(f"{path.name}: 'name' must be {name!r}")
    return data


def _resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
    """Raw pack data with the rules of every ancestor merged in."""
    if name in chain:
        raise ValueError(f"domain pack inheritance cycle: {' -> '.join((*chain, name))}")
    data = _read_yaml(name)
    rules = data.get("rules") or []
    if not isinstance(rules, list):
        raise ValueError(f"{name}.yaml: 'rules' must be a list")

    parent = data.get("extends")
    if parent:
        merged = list(_resolve(str(parent), (*chain, name))["rules"])
        positions = {rule.get("id"): index for index, rule in enumerate(merged)}
        for rule in rules:
            rule_id = rule.get("id") if isinstance(rule, dict) else None
            if rule_id in positions:
                merged[positions[rule_id]] = rule  # override keeps the parent's order
            else:
                merged.append(rule)
        rules = merged

    return {**data, "rules": rules}

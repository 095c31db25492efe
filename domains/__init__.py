"""Domain packs: the YAML files next to this module, and uploaded packs.

The format is documented in ``domains/README.md``. Public API:

* ``load_domain_pack(name)``: a shipped pack, validated, inheritance
  resolved, rules compiled, cached per name. Raises ``UnknownDomain`` when no
  pack of that name is shipped: the caller decides on a fallback (e.g.
  ``DEFAULT_DOMAIN`` together with ``evaluators.sanitize.unknown_domain_finding``).
* ``parse_domain_pack(data, source)``: an uploaded pack (a parsed YAML/JSON
  mapping), whose ``extends`` may name a shipped pack. Not cached: cache by
  ``DomainPack.fingerprint`` if needed.
* ``PackError``: every invalid pack, with a message such as
  ``healthcare.yaml: rules[3].patterns[0]: invalid regex: ...`` and the same
  problems as data in ``problems``.

Inheritance (``extends``): the parent's rules come first; a rule with the
same ``id`` replaces the parent's rule in place, others are appended. Keys
the pack leaves out (``risk_level``, ``regulatory_frameworks``,
``pass_threshold``, ``rubric``, ``alerts``) are the parent's, and
``escalation`` is merged key by key over the parent's.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from evaluators.rules import RULE_KINDS, DomainPack, Escalation

__all__ = [
    "DEFAULT_DOMAIN",
    "DomainPack",
    "PackError",
    "UnknownDomain",
    "available_domains",
    "load_domain_pack",
    "parse_domain_pack",
]

PACK_DIR = Path(__file__).resolve().parent
DEFAULT_DOMAIN = "generic"

# Pack names double as file names, so only simple names are accepted; this
# also keeps a caller-supplied name from reaching outside PACK_DIR.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

_INHERITED_KEYS = ("risk_level", "regulatory_frameworks", "pass_threshold", "rubric", "alerts")


class UnknownDomain(LookupError):
    """No shipped pack has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no shipped domain pack named {name[:64]!r}")
        self.name = name


class PackError(ValueError):
    """An invalid domain pack.

    ``problems`` lists ``{"path": "rules[4].patterns[1]", "message": ...}``
    items (``path`` is ``""`` for the pack as a whole), so that an API can
    return them as they are.
    """

    def __init__(self, source: str, problems: list[dict[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"{source}: {problem['path']}: {problem['message']}"
            if problem["path"]
            else f"{source}: {problem['message']}"
            for problem in problems
        ]
        super().__init__("; ".join(lines))


def available_domains() -> list[str]:
    """Names of the packs shipped in this directory."""
    return sorted(path.stem for path in PACK_DIR.glob("*.yaml") if _NAME_RE.match(path.stem))


def load_domain_pack(name: str) -> DomainPack:
    """The shipped pack called ``name`` (case-insensitive); cached.

    Raises ``UnknownDomain`` when there is none, and ``PackError`` when the
    shipped file is invalid.
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if key not in _shipped_names():
        raise UnknownDomain(str(name))
    return _load_shipped(key)


@cache
def _shipped_names() -> frozenset[str]:
    # Read once: the shipped packs do not change while the process runs, and
    # a lookup per activity should not cost a file-system call.
    return frozenset(available_domains())


def parse_domain_pack(data: Mapping[str, Any], source: str) -> DomainPack:
    """Validate an uploaded pack; ``extends`` may name a shipped pack."""
    if not isinstance(data, Mapping):
        raise PackError(source, [{"path": "", "message": "a pack must be a mapping of keys to values"}])
    try:
        pack = DomainPack.model_validate(dict(data))
    except ValidationError as exc:
        raise PackError(source, _problems(exc, data)) from None
    if pack.extends is None:
        return pack
    try:
        parent = load_domain_pack(pack.extends)
    except UnknownDomain:
        message = f"unknown parent pack {pack.extends!r}; shipped packs: {', '.join(available_domains())}"
        raise PackError(source, [{"path": "extends", "message": message}]) from None
    return _inherit(pack, parent, source, data)


# --------------------------------------------------------------------------
# shipped packs
# --------------------------------------------------------------------------

# Shipped packs being loaded, to report an ``extends`` cycle instead of
# recursing forever. The lock is re-entrant because loading a pack loads its
# parent in the same thread.
_loading: list[str] = []
_loading_lock = threading.RLock()


@cache
def _load_shipped(name: str) -> DomainPack:
    source = f"{name}.yaml"
    with _loading_lock:
        if name in _loading:
            cycle = " -> ".join([*_loading, name])
            raise PackError(source, [{"path": "extends", "message": f"inheritance cycle: {cycle}"}])
        _loading.append(name)
        try:
            data = _read_yaml(PACK_DIR / source)
            if isinstance(data, Mapping) and data.get("name") != name:
                raise PackError(source, [{"path": "name", "message": f"must be {name!r}, the file's name"}])
            return parse_domain_pack(data, source)
        finally:
            _loading.pop()


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PackError(path.name, [{"path": "", "message": f"invalid YAML: {exc}"}]) from None


# --------------------------------------------------------------------------
# inheritance
# --------------------------------------------------------------------------


def _inherit(child: DomainPack, parent: DomainPack, source: str, data: Mapping[str, Any]) -> DomainPack:
    update: dict[str, Any] = {
        key: getattr(parent, key) for key in _INHERITED_KEYS if key not in child.model_fields_set
    }
    if "escalation" not in child.model_fields_set:
        update["escalation"] = parent.escalation
    else:
        merged = parent.escalation.model_dump()
        merged.update({key: getattr(child.escalation, key) for key in child.escalation.model_fields_set})
        try:
            update["escalation"] = Escalation.model_validate(merged)
        except ValidationError as exc:
            raise PackError(source, _problems(exc, data, prefix=("escalation",))) from None

    rules = list(parent.rules)
    positions = {rule.id: index for index, rule in enumerate(rules)}
    for rule in child.rules:
        if rule.id in positions:
            rules[positions[rule.id]] = rule  # an override keeps the parent's order
        else:
            positions[rule.id] = len(rules)
            rules.append(rule)
    update["rules"] = rules

    resolved = child.model_copy(update=update)
    resolved._fingerprint = None
    return resolved


# --------------------------------------------------------------------------
# validation errors -> key paths
# --------------------------------------------------------------------------


def _problems(exc: ValidationError, data: Any, prefix: Sequence[str | int] = ()) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    for error in exc.errors(include_url=False):
        path = _path((*prefix, *error["loc"]), data)
        kind = error["type"]
        ctx = error.get("ctx") or {}
        message = str(error["msg"])
        if kind == "pack":
            extra = str(ctx.get("path", ""))
            if extra:
                path = f"{path}{extra}" if extra.startswith("[") or not path else f"{path}.{extra}"
            message = str(ctx.get("message", message))
        elif kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required key is missing"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            path = f"{path}.kind" if path else "kind"
            expected = ", ".join(RULE_KINDS)
            if kind == "union_tag_invalid":
                message = f"unknown rule kind {ctx.get('tag')!r}; expected one of {expected}"
            else:
                message = f"missing rule kind; expected one of {expected}"
        elif "[key]" in error["loc"]:
            message = f"unknown name: {message}"
        problem = {"path": path, "message": message}
        if problem not in problems:
            problems.append(problem)
    return problems


def _path(loc: Sequence[str | int], data: Any) -> str:
    """``('rules', 4, 'pattern', 'patterns', 1)`` -> ``rules[4].patterns[1]``.

    pydantic puts the discriminator value of a rule (its ``kind``) into the
    location; it is dropped, using the pack data to tell it from a key.
    """
    path = ""
    node = data
    for item in loc:
        if item == "[key]":
            continue
        if isinstance(item, int):
            path += f"[{item}]"
            node = node[item] if isinstance(node, list) and -len(node) <= item < len(node) else None
            continue
        if isinstance(node, Mapping) and item not in node and node.get("kind") == item:
            continue  # the union tag
        path = f"{path}.{item}" if path else str(item)
        node = node.get(item) if isinstance(node, Mapping) else None
    return path

"""Kubernetes names for what a DGD becomes: the DGD's own name as the API server would accept it
(a DNS-1123 subdomain), and the names `render` and `run` derive from it (`{dgd}-{service}` Deployments,
Services and pods, label values), which must be DNS-1123 labels: lowercase, `-`, at most 63 characters.

A derived name that is too long is cut and ends in a short stable hash of the full name (as Kubernetes'
own controllers name generated objects), so two long names that share their first 63 characters stay
apart; `collisions` finds the names that still coincide (`Worker` and `worker`, `a_b` and `a-b`), which
`validate` refuses.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

LABEL_MAX = 63  # DNS-1123 label, label value
SUBDOMAIN_MAX = 253
HASH_CHARS = 8
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def k8s_name(*parts: str) -> str:
    """A DNS-1123 label from the given parts joined by `-`: lowercase, other characters as `-`, and at most 63
    characters; a longer one keeps its first characters and ends in `-` + 8 hex digits of the full name's SHA-256."""
    full = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]+", "-", full.lower()).strip("-") or "x"
    if len(name) <= LABEL_MAX:
        return name
    digest = hashlib.sha256(full.encode()).hexdigest()[:HASH_CHARS]
    return f"{name[:LABEL_MAX - HASH_CHARS - 1].rstrip('-')}-{digest}"


def label_value(value: str) -> str:
    """`value` as a label value (at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends): as is when
    it is one, else shortened like `k8s_name` (a Dynamo namespace `{k8s namespace}-{dgd}` may be longer)."""
    if len(value) <= LABEL_MAX and re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value):
        return value
    return k8s_name(value)


def subdomain_problem(name: str) -> str | None:
    """Why the API server would refuse `name` as an object's metadata.name (a DNS-1123 subdomain); None: it
    would not."""
    if not name:
        return "must not be empty"
    if len(name) > SUBDOMAIN_MAX:
        return f"must be at most {SUBDOMAIN_MAX} characters (has {len(name)})"
    if not _SUBDOMAIN.fullmatch(name):
        return ("must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a "
                f"letter or digit (e.g. {k8s_name(name)!r})")
    return None


def collisions(named: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(name, the owners that share it) for every derived name more than one owner maps to; `named` is
    (owner, derived name) pairs, e.g. ("graph g, service Worker", "g-worker")."""
    owners: dict[str, list[str]] = {}
    for owner, name in named:
        owners.setdefault(name, []).append(owner)
    return [(name, found) for name, found in owners.items() if len(found) > 1]

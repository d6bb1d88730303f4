"""Kubernetes' `$(VAR)` expansion of a container's env values, `command` and `args`, as the kubelet does it
(`third_party/forked/golang/expansion`): `$(NAME)` becomes NAME's value when the container's env defines
it, `$$` is one literal `$` (so `$$(NAME)` stays `$(NAME)`), and any other `$` text, an undefined name
included, stays as written. An env value sees the entries before it in the container's env list; `command`
and `args` see the whole env.

`run` expands as the kubelet would, with the env each replica gets; `validate` expands with the values the
manifest fixes (a `valueFrom` entry or a Secret's key is unknown there, so a reference to it stays as
written and is not type-checked); `render` leaves expansion to Kubernetes.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from dynamo.deploy.model import EnvVar

_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """`text` with every `$(NAME)` that `env` defines replaced by its value and `$$` by `$`."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    # Left to right, as the kubelet scans: `$$(A)` is an escaped `$` followed by the text `(A)`.
    return _REFERENCE.sub(one, text)


def expand_all(words: list[str] | None, env: Mapping[str, str]) -> list[str] | None:
    return None if words is None else [expand(w, env) for w in words]


def expand_env(entries: Iterable[EnvVar], known: Mapping[str, str]) -> dict[str, str]:
    """The values of a container's env list as the process sees them: each plain value expanded against
    `known` (what the kubelet sets before the list: envFrom sources) and the entries before it, a later
    entry of a name replacing an earlier one. A `valueFrom` entry has no value known here: its name is
    dropped, so references to it stay as written."""
    values = dict(known)
    own: dict[str, str] = {}
    for entry in entries:
        if entry.valueFrom is not None:
            values.pop(entry.name, None)
            own.pop(entry.name, None)
            continue
        own[entry.name] = values[entry.name] = expand(entry.value or "", values)
    return own


def unresolved(text: str) -> list[str]:
    """The `$(NAME)` references left in `text` after expansion (`$$` escapes are not references)."""
    return [m.group(0) for m in _REFERENCE.finditer(text) if m.group(0) != "$$"]

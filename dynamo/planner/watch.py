"""Whether the planner sees its pools at all. Workers publish their model cards and forward-pass metrics in
a Dynamo namespace; a planner that looks in another one (its config's `namespace`, else `$DYN_NAMESPACE`)
holds on "no engine reports yet" forever while the pools it scales have ready replicas. After `after`
seconds of that a warning names the namespace it reads, what is missing (cards, or only their metrics) and
the namespaces where worker cards are found instead, and the discovery store it read (a graph under
`python -m dynamo.deploy run` keeps its own file store, which a planner started by hand does not read unless
given `run`'s DYN_DISCOVERY_BACKEND and DYN_FILE_KV); repeated every `every` seconds while it lasts, and
the recovery is said once."""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("dynamo.planner")
WARN_AFTER_S = 60.0
REPEAT_S = 600.0


def describe_store(store) -> str:
    """Which discovery store a planner reads, as the warning names it."""
    backend = getattr(store, "backend", None)
    where = {"file": lambda: f" {store.root} ($DYN_FILE_KV)",
             "etcd": lambda: f" {', '.join(store.endpoints)}"}.get(backend, lambda: "")()
    return f"the {backend} discovery store{where}" if backend else "no discovery store"


class SilentPools:
    def __init__(self, namespace: str, after: float = WARN_AFTER_S, every: float = REPEAT_S,
                 clock: Callable[[], float] = time.monotonic, store: str = "") -> None:
        self.namespace, self.after, self.every, self.clock = namespace, after, every, clock
        self.store = store  # describe_store()'s text
        self.since: float | None = None  # when the pools went unseen
        self.warned_at: float | None = None

    def due(self, ready: dict[str, int], reporting: dict[str, int]) -> list[str] | None:
        """The roles with ready replicas and no engine reporting, when a warning is due now; None otherwise.
        A recovery after a warning is said here."""
        silent = [role for role, n in ready.items() if n > 0 and not reporting.get(role)]
        now = self.clock()
        if not silent:
            if self.warned_at is not None:
                log.info("planner: the pools publish in namespace %r now", self.namespace)
            self.since = self.warned_at = None
            return None
        self.since = now if self.since is None else self.since
        if now - self.since < self.after or (self.warned_at is not None and now - self.warned_at < self.every):
            return None
        self.warned_at = now
        return silent

    def warn(self, silent: list[str], ready: dict[str, int], cards: int, elsewhere: list[str]) -> str:
        waited = self.clock() - (self.since or self.clock())
        pools = ", ".join(f"{role} ({ready[role]} ready)" for role in silent)
        if cards:
            what = f"{cards} worker card(s) there but no forward-pass metrics from the {pools} pool(s)"
        else:
            what = f"no worker card there while the {pools} pool(s) have ready replicas"
        if elsewhere and not cards:
            hint = (f"; worker cards are in namespace(s) {', '.join(repr(n) for n in elsewhere)}: set the planner's "
                    "`namespace` (or $DYN_NAMESPACE) to theirs")
        elif not cards:  # none anywhere in this store: the workers register in another one
            hint = ("; no worker card in any namespace of this store: the workers register in another one (a graph "
                    "under `python -m dynamo.deploy run` keeps its own: export DYN_DISCOVERY_BACKEND=file and "
                    "DYN_FILE_KV=<run's state dir>/kv before starting the planner)")
        else:
            hint = ""
        looked = f" of {self.store}" if self.store else ""
        text = (f"planner: nothing seen in namespace {self.namespace!r}{looked} for {waited:.0f}s: {what}; every "
                f"decision holds{hint}")
        log.warning("%s", text)
        return text

"""What a re-listing watch has reported, and the deletes it holds back after a re-list.

A watch that lost its stream (store restart, compaction, network) re-lists and reports the
difference. A key missing from that re-list is not proof that its owner died: a store that
came back with its data lost has no keys at all until each owner notices its lost lease
and re-puts them, which takes up to about one lease TTL. Reporting those deletes at once
would make consumers drop live workers (and their models, and their KV index) for a
moment. So a key missing from a re-list is *held*: it is reported deleted only if it has
not come back within `grace` seconds. Deletes seen live on the stream (a lease that
expired, a key deleted) are reported at once, as before.
"""

from __future__ import annotations

from dynamo.runtime.discovery.base import WatchEvent


class ResyncView:
    """Keys as the watch's consumer sees them, plus the held deletes and their deadlines."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.known: dict[str, bytes] = {}  # what the consumer was told, held keys included
        self._held: dict[str, float] = {}  # key -> when its delete is reported

    @property
    def held(self) -> dict[str, float]:
        return dict(self._held)

    def resync(self, snapshot: dict[str, bytes], now: float) -> list[WatchEvent]:
        """Puts for keys new or changed in `snapshot`; keys missing from it are held, not deleted.

        A key whose deadline passed while the store was away gets a fresh one: its owner needs the
        store up for `grace` seconds to re-put it. One whose deadline is still ahead keeps it.
        """
        events = [WatchEvent("put", k, v) for k, v in sorted(snapshot.items()) if self.known.get(k) != v]
        for key in snapshot:
            self._held.pop(key, None)
        for key in self.known.keys() - snapshot.keys():
            # A held key keeps its deadline while it is still ahead (a watch that keeps breaking must not
            # postpone a dead owner's delete for good); one that passed while the store was away gets a
            # fresh grace, since its owner could not re-put meanwhile.
            deadline = self._held.get(key)
            if deadline is None or deadline <= now:
                self._held[key] = now + self.grace
        self.known.update(snapshot)
        return events

    def apply(self, event: WatchEvent) -> WatchEvent | None:
        """A live stream event, or None when it only confirms a held key unchanged."""
        held = self._held.pop(event.key, None) is not None
        if event.kind == "delete":
            self.known.pop(event.key, None)
            return event
        value = event.value or b""
        if held and self.known.get(event.key) == value:
            return None  # re-put as it was: the consumer never saw it go
        self.known[event.key] = value
        return event

    def due(self, now: float) -> list[WatchEvent]:
        """Deletes of held keys whose owners did not re-put them in time."""
        keys = sorted(k for k, deadline in self._held.items() if deadline <= now)
        for key in keys:
            del self._held[key]
            self.known.pop(key, None)
        return [WatchEvent("delete", k) for k in keys]

    def next_deadline(self) -> float | None:
        return min(self._held.values(), default=None)

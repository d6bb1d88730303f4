"""A bound on what one caller's response streams hold undelivered (the request-plane client side).

A worker's connection is multiplexed and read by one reader, so a caller that stops taking a
stream's items (an HTTP client that does not read its response) cannot slow the socket down for
that one stream: the items wait in the stream, and without a bound they grow for as long as the
worker generates. A `Backlog` counts the bytes that the streams of one caller (the `n` choices of
one request, each migration's new stream too) have received and not handed over. Once that passes
its limit while the caller's own client is behind (`waiting_since`: the caller has waited on it for
`STALL_GRACE` seconds, or `HARD_STALL` once the backlog is `HARD_FACTOR` times the limit, still so on the
same send `CONFIRM_SECS` later, so that a pause of the frontend's own loop is not taken for it), every one of
its streams is cancelled at its worker, the way a client disconnect cancels them, what they held is
dropped, and each ends with `FellBehind` (code `cancelled`). Other callers' streams on the same
connections go on untouched. A caller that is merely busy (a frontend slower than its workers for
a while: its client takes every byte it is given) is not behind, however large its backlog grows
short of the hard bound.

Streams join the backlog in effect where they are opened (`counting(backlog)`, a context variable:
the request's task and the tasks it starts), since the request plane is reached through layers
(dispatch, the worker client) that have no say in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from typing import Callable, Iterator, Protocol

_CURRENT: contextvars.ContextVar["Backlog | None"] = contextvars.ContextVar("rp_backlog", default=None)


class _Counted(Protocol):
    def _fell_behind(self, message: str) -> None: ...


# A client that takes nothing for this long while the backlog is over its limit is behind: one that reads
# takes a chunk within milliseconds (a slow network: within a second or so for the largest chunks).
STALL_GRACE = 2.0
# Over this many times the limit, a client that has waited `HARD_STALL` seconds is behind, however
# recently it took something before: one that reads a trickle never waits `STALL_GRACE` at a time.
HARD_FACTOR = 4
HARD_STALL = 0.5
# A stall is confirmed this long after it is seen, on the same send: a pause of the frontend's own event loop
# (a collection, a starved CPU) looks like a stalled client to the items that arrive first after it, but the
# send, woken by then, has had its turn before the confirmation runs.
CONFIRM_SECS = 0.05


class Backlog:
    __slots__ = ("limit", "held", "peak", "waiting_since", "sends", "tripped", "on_trip", "_streams", "_confirming")

    def __init__(self, limit: int, on_trip: Callable[["Backlog"], None] | None = None) -> None:
        self.limit = limit
        self.held = 0  # bytes received by its streams and not yet taken by the caller
        self.peak = 0
        # time.monotonic() since when the caller waits on its own client (set around its sends), else None
        self.waiting_since: float | None = None
        self.sends = 0  # sends begun: a stall is confirmed on the send it was seen on
        self.tripped = False
        self._confirming = False
        self.on_trip = on_trip  # called once, when the streams are cut
        self._streams: set[_Counted] = set()

    def join(self, stream: _Counted) -> None:
        self._streams.add(stream)

    def leave(self, stream: _Counted, held: int) -> None:
        self._streams.discard(stream)
        self.held -= held

    def grew(self, size: int) -> None:
        held = self.held = self.held + size
        if held > self.peak:
            self.peak = held
        if not self._confirming and not self.tripped and self._stalled():
            self._confirming = True
            asyncio.get_running_loop().call_later(CONFIRM_SECS, self._confirm, self.sends)

    def _stalled(self) -> bool:
        """Over the limit while the caller's client has taken nothing for long enough."""
        if self.held <= self.limit or self.waiting_since is None:
            return False
        waited = time.monotonic() - self.waiting_since
        return waited >= STALL_GRACE or (self.held > HARD_FACTOR * self.limit and waited >= HARD_STALL)

    def _confirm(self, sends: int) -> None:
        self._confirming = False
        if not self.tripped and self.sends == sends and self._stalled():
            self._trip()

    def taken(self, size: int) -> None:
        self.held -= size

    def _trip(self) -> None:
        self.tripped = True
        message = (f"the client fell too far behind reading its response: {self.held / 2**20:.1f} MiB waited "
                   f"undelivered (limit {self.limit / 2**20:g} MiB)")
        for stream in list(self._streams):
            stream._fell_behind(message)
        if self.on_trip is not None:
            self.on_trip(self)


def current() -> Backlog | None:
    """The backlog that streams opened here count against (None: unbounded)."""
    return _CURRENT.get()


@contextlib.contextmanager
def counting(backlog: Backlog | None) -> Iterator[None]:
    """Streams opened within (and in tasks started within) count against `backlog`."""
    token = _CURRENT.set(backlog)
    try:
        yield
    finally:
        _CURRENT.reset(token)

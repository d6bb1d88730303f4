"""Which model card a served model name follows when its workers registered more than one.

Workers of one model must agree on its card (tokenizer files, context length, KV block size: the
checksum). They disagree during a rolling update that changes one of those (a new `--block-size`,
`--max-model-len`, model revision): old and new workers are up side by side, under the same Dynamo
namespace (a Deployment's or `dynamo.deploy run`'s rollout) or in hashed worker namespaces the frontend
watches by prefix (the operator's managed rollout). The frontend serves one card at a time, tokenizing
and routing by it; the others' workers are held apart, never mixed in.

The card followed is the one with the most live workers able to answer a request (aggregated or
decode; prefill workers alone cannot): the old card's until the new one's outnumber them, and whichever
is left when the other's last worker goes, so the model never goes dark while some worker can serve it.
A tie keeps the card followed now. A disaggregated model (its card has prefill workers) moves only to a
card with prefill workers too, unless nothing of its own card can answer any more.

A switch is damped (`CardSwitch`): another card takes over only once its majority has held for a settle time
(`--model-card-settle-secs`), counted from the last switch at the earliest, so a crash-looping new generation
does not switch the card back and forth (each switch rebuilds the KV router's index and sends the requests
prepared meanwhile to be prepared again). Each switch back to the card left at the last one waits twice as long
as that switch did (up to a minute; plain again after a quiet spell): a generation that crashes only after it took
over does not flip the card every settle time either. Not when the served card has no answering worker left: then
the switch is at once, since waiting would leave the model dark.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Callable, Collection, Container, Mapping

from dynamo.llm.model_card import ModelDeploymentCard, WorkerType
from dynamo.runtime.records import EndpointId

log = logging.getLogger(__name__)

Member = tuple[EndpointId, int, ModelDeploymentCard]
CARD_SETTLE_SECS = 3.0  # --model-card-settle-secs' default
MAX_SETTLE_SECS = 60.0  # the longest a flip back is damped
QUIET_SECS = 2 * MAX_SETTLE_SECS  # past this since the last switch, a switch back waits the plain settle time


def generations(cards: Mapping[tuple[EndpointId, int], Mapping[str, ModelDeploymentCard]],
                name: str) -> dict[str, list[Member]]:
    """The workers that registered a card for `name`, by the card's checksum."""
    out: dict[str, list[Member]] = {}
    for (eid, iid), by_key in cards.items():
        for card in by_key.values():
            if card.display_name == name and card.mdcsum:
                out.setdefault(card.mdcsum, []).append((eid, iid, card))
    return out


def answering(members: Collection[Member], alive: Container[tuple[EndpointId, int]] | None = None) -> int:
    """How many of `members` can answer a request end to end (not prefill-only); with `alive`, only those
    whose instance is there (a card alone is not a worker that serves)."""
    return sum(1 for eid, iid, card in members
               if card.worker_type != WorkerType.PREFILL and (alive is None or (eid, iid) in alive))


def _prefills(members: Collection[Member]) -> bool:
    return any(card.worker_type == WorkerType.PREFILL for _, _, card in members)


def successor(current: str, gens: Mapping[str, Collection[Member]], ready: Collection[str],
              alive: Container[tuple[EndpointId, int]] | None = None) -> str | None:
    """The checksum to follow instead of `current`, if another card's answering workers outnumber its
    own; `ready`: the checksums whose tokenizer and template are loaded (only those can serve)."""
    own = gens.get(current, ())
    best, best_count = None, answering(own, alive)
    disaggregated = _prefills(own) and best_count > 0
    for mdcsum, members in sorted(gens.items()):
        count = answering(members, alive)
        if mdcsum != current and mdcsum in ready and count > best_count and \
                (_prefills(members) or not disaggregated):
            best, best_count = mdcsum, count
    return best


def held_apart(gens: Mapping[str, Collection[Member]], served: str, ready: Collection[str],
               alive: Container[tuple[EndpointId, int]] | None = None) -> list[dict]:
    """The cards other than `served`, as an operator sees a rollout: checksum, live answering workers, and
    whether its tokenizer is loaded (`ready`: it can serve)."""
    return [{"checksum": mdcsum, "workers": answering(members, alive), "ready": mdcsum in ready}
            for mdcsum, members in sorted(gens.items()) if mdcsum != served]


class CardSwitch:
    """One model's damping between `successor`'s word and an actual switch, and the one timer that asks again
    once a majority may have settled (`arm`; cancelled by `cancel`, by its owner when the model goes or the
    manager stops). A switch back to the card left at the last switch, within QUIET_SECS of it (a generation that
    crashes after it took over), waits twice the settle time the last switch waited, up to MAX_SETTLE_SECS."""

    __slots__ = ("settle", "clock", "_leader", "_since", "_switched_at", "_left", "_damping", "_timer")

    def __init__(self, settle: float = CARD_SETTLE_SECS, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle, self.clock = settle, clock
        self._leader: str | None = None  # the card that outnumbers the served one now, and since when
        self._since = 0.0
        self._switched_at = -math.inf
        self._left: str | None = None  # the card served before the last switch
        self._damping = settle  # the settle time the last switch waited (doubled on each flip back)
        self._timer: asyncio.TimerHandle | None = None

    def decide(self, served: str, candidate: str | None, served_answers: bool) -> tuple[str | None, float | None]:
        """(the card to switch to now, else None; the seconds after which to ask again while `candidate` waits
        out its settle time, else None). `candidate`: `successor`'s pick instead of `served`; `served_answers`:
        whether the served card still has a live answering worker (without one the switch is at once)."""
        now = self.clock()
        if candidate is None:
            self._leader = None  # a majority that lapses starts its settle time again when it comes back
            return None, None
        if candidate != self._leader:
            self._leader, self._since = candidate, now
        settle = self._settle_for(candidate, now)
        # held for the settle time, and no sooner than the settle time after the last switch (no switch back)
        wait = max(self._since, self._switched_at) + settle - now
        if served_answers and wait > 0:
            return None, wait
        self._leader, self._left, self._switched_at, self._damping = None, served, now, settle
        return candidate, None

    def _settle_for(self, candidate: str, now: float) -> float:
        if candidate == self._left and now - self._switched_at < QUIET_SECS:  # flipping back: damped harder
            return min(max(self._damping, self.settle) * 2, max(MAX_SETTLE_SECS, self.settle))
        return self.settle

    def arm(self, wait: float, recheck: Callable[[], None]) -> None:
        """Ask again (`recheck`) after `wait` seconds; replaces the look-again armed before, if any."""
        self.cancel()
        self._timer = asyncio.get_running_loop().call_later(wait, self._fire, recheck)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, recheck: Callable[[], None]) -> None:
        self._timer = None
        try:
            recheck()
        except Exception:  # a timer's exception would go nowhere: logged, and the next event looks again
            log.exception("looking again at a model's card switch failed")

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
"""

from __future__ import annotations

from typing import Collection, Container, Mapping

from dynamo.llm.model_card import ModelDeploymentCard, WorkerType
from dynamo.runtime.records import EndpointId

Member = tuple[EndpointId, int, ModelDeploymentCard]


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

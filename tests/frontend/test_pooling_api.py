"""The pooling routes' dispatch (pooling_api.py): every wire request is pinned to the card its inputs were
tokenized for; a Batch API line's pooling requests route in the background tier, keeping every other hint they
carry."""

from __future__ import annotations

from dynamo.frontend.pooling_api import PooledStreams
from dynamo.llm.protocol import BACKGROUND_TIER, PreprocessedRequest, RoutingHints


class Recorder:
    """What a dispatcher's `stream` is handed (the wrapper's only use of it)."""

    def __init__(self) -> None:
        self.requests: list[PreprocessedRequest] = []
        self.cards: list[str] = []

    def stream(self, entry, request, handle, card):
        self.requests.append(request)
        self.cards.append(card)
        return "stream"


def test_background_pooling_requests_route_in_the_lowest_tier_with_their_other_hints():
    recorder = Recorder()
    background = PooledStreams(recorder, "card-a", background=True)
    plain = PreprocessedRequest(request_id="a", model="m", token_ids=[1, 2])
    salted = PreprocessedRequest(request_id="b", model="m", token_ids=[3], routing=RoutingHints(cache_salt="tenant", strict_priority=3))
    assert background.stream(None, plain, None) == "stream" and background.stream(None, salted, None) == "stream"
    assert [r.routing.strict_priority for r in recorder.requests] == [BACKGROUND_TIER, BACKGROUND_TIER]
    assert recorder.requests[1].routing.cache_salt == "tenant" and recorder.requests[1].token_ids == [3]
    assert plain.routing is None  # the caller's request is not changed under it
    assert recorder.cards == ["card-a", "card-a"]


def test_a_clients_pooling_requests_keep_their_hints_and_are_pinned_to_their_card():
    recorder = Recorder()
    plain = PreprocessedRequest(request_id="a", model="m", token_ids=[1, 2])
    assert PooledStreams(recorder, "card-b").stream(None, plain, None) == "stream"
    assert recorder.requests == [plain] and recorder.cards == ["card-b"]

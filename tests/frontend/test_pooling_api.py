"""The pooling routes' dispatch (pooling_api.py): a Batch API line's pooling requests route in the
background tier, keeping every other hint they carry."""

from __future__ import annotations

from dynamo.frontend.pooling_api import BackgroundStreams
from dynamo.llm.protocol import BACKGROUND_TIER, PreprocessedRequest, RoutingHints


class Recorder:
    """What a dispatcher's `stream` is handed (the wrapper's only use of it)."""

    def __init__(self) -> None:
        self.requests: list[PreprocessedRequest] = []

    def stream(self, entry, request, handle):
        self.requests.append(request)
        return "stream"


def test_background_pooling_requests_route_in_the_lowest_tier_with_their_other_hints():
    recorder = Recorder()
    background = BackgroundStreams(recorder)
    plain = PreprocessedRequest(request_id="a", model="m", token_ids=[1, 2])
    salted = PreprocessedRequest(request_id="b", model="m", token_ids=[3], routing=RoutingHints(cache_salt="tenant", strict_priority=3))
    assert background.stream(None, plain, None) == "stream" and background.stream(None, salted, None) == "stream"
    assert [r.routing.strict_priority for r in recorder.requests] == [BACKGROUND_TIER, BACKGROUND_TIER]
    assert recorder.requests[1].routing.cache_salt == "tenant" and recorder.requests[1].token_ids == [3]
    assert plain.routing is None  # the caller's request is not changed under it

"""What the KV router reads from a request's routing hints (`nvext`): how much answer to book for it and
the KV namespace its blocks live in."""

from __future__ import annotations

from dynamo.llm.protocol import PreprocessedRequest


def expected_output(request: PreprocessedRequest) -> int | None:
    """Tokens the answer is expected to fill, for output-block tracking: the client's estimate
    (`nvext.agent_hints.osl`) within `max_tokens`, else `max_tokens`."""
    cap = request.stop_conditions.max_tokens
    osl = request.routing.osl if request.routing is not None else None
    if osl is None:
        return cap
    return osl if cap is None else min(osl, cap)


def cache_salt_of(request: PreprocessedRequest) -> str | None:
    """The request's KV namespace (`nvext.cache_salt`): its blocks match only blocks cached under it."""
    return request.routing.cache_salt if request.routing is not None else None

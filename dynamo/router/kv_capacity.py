"""The wait of a booking that does not fit a worker's KV cache.

An engine admits a request only when its blocks fit (vLLM, SGLang, the mocker, TRT-LLM): past a
worker's KV capacity a request waits in the engine's queue until running requests end and free
enough blocks. That wait is a step, not a slope (often most of an answer's decode, where a cold
prefill elsewhere costs a tenth of it), so the linear ttft model cannot price it. It is predicted
here from the router's own bookings: each running request ends about its expected answer's
length of decode steps after it was booked; walking them in that order, the wait is over when
the blocks they free cover what the booking lacks.

The wait is priced only when a worker that would not wait keeps what it evicts in a lower tier
(host memory, disk): going there then loses no cache. Where evicting loses blocks, skipping the
wait displaces another prefix, which a later request prefills again, and that one displaces the
next: on 12 RAG documents that fill two workers' caches (`benchmarks/routing_quality.py
--workload rag`), pricing the wait there too took kv TTFT p50 from 87 ms to 95-178 ms, whether
or not the other worker had free blocks.
"""

from __future__ import annotations

from typing import Callable, Hashable, Mapping, Sequence, TypeVar

Key = TypeVar("Key", bound=Hashable)

# The answer length assumed for a running request that gave none (no max_tokens, no osl hint).
DEFAULT_ANSWER_TOKENS = 256
PACE_WEIGHT = 0.1  # of each finished request in the observed pace: about the last 10-20 count


def blocks_short(blocks_after_booking: int, total_blocks: int | None) -> int:
    """Blocks the worker lacks to admit the booking now (0 when it fits or its size is unknown)."""
    if not total_blocks:
        return 0
    return max(blocks_after_booking - total_blocks, 0)


def finish_time(booked_at: float, answer_tokens: int | None, seconds_per_token: float) -> float:
    """When a request booked at `booked_at` is expected to end, at `seconds_per_token` of its answer."""
    return booked_at + (answer_tokens or DEFAULT_ANSWER_TOKENS) * seconds_per_token


class AnswerPace:
    """Seconds from booking to end per expected answer token, as the router's finished requests
    took (an exponentially weighted mean): the decode step, the prefill and the queueing as they
    are on these workers now, and answers that end before their `max_tokens` too. Cancelled
    requests count as well; they end early, so the pace errs short, which keeps requests on the
    worker that holds their prefix."""

    def __init__(self) -> None:
        self.seconds_per_token: float | None = None

    def observe(self, seconds: float, answer_tokens: int | None) -> None:
        if not answer_tokens or not 0 < seconds < 3600:
            return
        pace = seconds / answer_tokens
        last = self.seconds_per_token
        self.seconds_per_token = pace if last is None else last + PACE_WEIGHT * (pace - last)


def memory_wait(releases: Sequence[tuple[float, int]], short: int, now: float) -> float:
    """Seconds until the running requests, ending as `releases` says ((when, blocks freed) in order),
    have freed `short` blocks."""
    if short <= 0 or not releases:
        return 0.0
    freed = 0
    for when, blocks in releases:
        freed += blocks
        if freed >= short:
            return max(when - now, 0.0)
    return max(releases[-1][0] - now, 0.0)  # not even an idle worker holds it: after everything running


def priced_waits(waits: Mapping[Key, float], offloads: Callable[[Key], bool]) -> Mapping[Key, float]:
    """The waits to add to the workers' costs: all of them when a worker that would not wait
    offloads its evictions to a lower tier, none otherwise."""
    if any(waits.values()) and any(not wait and offloads(key) for key, wait in waits.items()):
        return waits
    return {}

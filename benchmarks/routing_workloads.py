"""Workload plans for `routing_quality.py` and `mocker_fidelity.py`: which prompts each concurrent
user sends, in order, for every `--workload` (described in routing_quality's docstring), the
`pinned` reference router's assignment, and the subsets of requests a table reports apart."""

from __future__ import annotations

import itertools
import random

WORKLOADS = {
    "groups": dict(groups=16, prefix_tokens=1150, suffix_tokens=30, concurrency=16, blocks=200, requests=160),
    "long-prefix": dict(groups=8, prefix_tokens=5000, suffix_tokens=30, concurrency=24, blocks=480, requests=144),
    "rag": dict(groups=12, prefix_tokens=6000, suffix_tokens=60, concurrency=16, blocks=560, requests=128),
    "multi-turn": dict(groups=24, prefix_tokens=800, suffix_tokens=120, concurrency=12, blocks=240, requests=144),
    "agentic": dict(groups=24, prefix_tokens=3000, suffix_tokens=120, concurrency=12, blocks=480, requests=144),
    "mixed": dict(groups=16, prefix_tokens=1150, suffix_tokens=30, concurrency=16, blocks=200, requests=160),
    # One chat app: every request starts with the same system prompt, then a user message of 50 to
    # `suffix_tokens` tokens (seeded), so requests differ in the prefill they bring.
    "system-prompt": dict(groups=1, prefix_tokens=2000, suffix_tokens=2000, concurrency=16, blocks=480, requests=160),
    # Two real vLLM CPU workers (tiny model, context 2,048): shared prefixes as long as it allows.
    "vllm-prefix": dict(groups=16, prefix_tokens=1500, suffix_tokens=40, concurrency=4, blocks=0, requests=64),
}


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(100, 400) for _ in range(n)]


def users(args) -> list[list[list[int]]]:
    """The prompts each concurrent user sends, in order (a user waits for each answer)."""
    rng = random.Random(args.seed)
    if args.workload in ("multi-turn", "agentic"):
        return _conversations(rng, args)
    if args.workload == "rag":
        prefixes = [_tokens(rng, rng.randrange(4000, 8001)) for _ in range(args.groups)]
    else:
        prefixes = [_tokens(rng, args.prefix_tokens) for _ in range(args.groups)]
    prompts = []
    for _ in range(args.requests):
        # A seeded coin, not every other request: alternating kinds would give every other user only
        # unique prompts, and hand round-robin (alternating workers) one worker of each kind.
        if args.workload == "mixed" and rng.random() < 0.5:
            prompts.append(_tokens(rng, rng.randrange(300, 2000)))
        else:
            length = rng.randrange(50, args.suffix_tokens + 1) if args.workload == "system-prompt" else \
                args.suffix_tokens
            prompts.append(prefixes[rng.randrange(args.groups)] + _tokens(rng, length))
    return [prompts[u::args.concurrency] for u in range(args.concurrency)]


def _conversations(rng: random.Random, args) -> list[list[list[int]]]:
    turns = max(args.requests // args.groups, 1)
    out: list[list[list[int]]] = [[] for _ in range(args.concurrency)]
    for c in range(args.groups):
        history = _tokens(rng, args.prefix_tokens)  # system prompt + first message
        for _ in range(turns):
            out[c % args.concurrency].append(list(history))
            history += _tokens(rng, args.max_tokens) + _tokens(rng, args.suffix_tokens)  # answer + next message
    return out


def families(plan: list[list[list[int]]]) -> dict[tuple[int, ...], int]:
    """Each prompt family (its first 64 tokens: a shared prefix, a conversation) numbered in order of
    first appearance."""
    out: dict[tuple[int, ...], int] = {}
    for prompts in itertools.zip_longest(*plan):  # the order requests go out: every user's first, then second...
        for prompt in filter(None, prompts):
            out.setdefault(tuple(prompt[:64]), len(out))
    return out


def pinning(plan: list[list[list[int]]], worker_ids: list[int]) -> dict[tuple[int, ...], int]:
    """The `pinned` reference router: perfect cache affinity with groups balanced by count. Each
    prompt family goes to one worker, the families dealt out in turn in order of first appearance."""
    return {family: worker_ids[n % len(worker_ids)] for family, n in families(plan).items()}


def shared_prefix(plan: list[list[list[int]]]) -> set[tuple[int, int]]:
    """(user, index) of every request whose first block (64 tokens) another request also starts with:
    the `groups` half of `mixed`, where the unique half has nothing cached anywhere."""
    counts: dict[tuple[int, ...], int] = {}
    for prompts in plan:
        for prompt in prompts:
            counts[tuple(prompt[:64])] = counts.get(tuple(prompt[:64]), 0) + 1
    return {(u, i) for u, prompts in enumerate(plan) for i, prompt in enumerate(prompts)
            if counts[tuple(prompt[:64])] > 1}


def follow_ups(plan: list[list[list[int]]]) -> set[tuple[int, int]]:
    """(user, index) of every request that extends the same user's previous prompt: a conversation's
    later turns, whose history a router can find cached. First turns are cold wherever they go."""
    return {(u, i) for u, prompts in enumerate(plan) for i in range(1, len(prompts))
            if prompts[i][:len(prompts[i - 1])] == prompts[i - 1]}


# The requests a workload's table reports apart, where routing shows (see routing_quality's docstring).
TRACKED = {"multi-turn": ("follow-up turns", follow_ups), "agentic": ("follow-up turns", follow_ups),
           "mixed": ("shared-prefix requests", shared_prefix)}


def tracked(workload: str, plan: list[list[list[int]]]) -> set[tuple[int, int]]:
    entry = TRACKED.get(workload)
    return entry[1](plan) if entry else set()

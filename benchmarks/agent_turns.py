"""Agent conversations through the chat API with real answers, plain vs speculative next-turn
prefill (`nvext.agent_hints.speculative_prefill`), ours and NVIDIA Dynamo 1.6.1 side by side.

Every user runs conversations one turn at a time. A turn resends the whole history: a shared agent
system prompt (tools, instructions), the conversation's earlier questions, and its earlier answers
as the frontend streamed them, so each prompt repeats the last answer re-tokenized from its text
(which the engine's cache, holding the tokens it generated, does not match block for block). Between
turns the user pauses U(think/2, think) ms (`--think-ms`: a tool running, a person reading): with
the hint, the frontend warms the next turn's prefix during that pause, and the follow-up turn
prefills only its new message. The table gives the TTFT of all turns and of the follow-ups, the
inter-token latency (each turn's mean; what a worker crowded with decoding answers costs every
turn on it), the prompt fraction found cached, and the warmups our frontend counted.

2 real-time mockers per stack, fresh processes per run, the same conversations for every row;
`--rounds N` alternates the order and reports the median [min-max].

    .venv/bin/python benchmarks/agent_turns.py --stacks ours anchor --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.loadgen import Result, pct, print_table, stream_one
from benchmarks.routing_quality import _count, _spread, long_context, stack_env
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

WORDS = ("file read write list search open close patch test build run error value result path line code "
         "call tool check return index table query token cache block worker route model answer plan step").split()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def plan(args) -> tuple[str, list[list[list[str]]]]:
    """(the shared system prompt, per user per conversation the user messages of its turns)."""
    rng = random.Random(args.seed)
    system = "You are a coding agent with these tools. " + words(rng, args.system_words)
    users = [[[f"conversation {u}.{c}: " + words(rng, args.message_words) for _ in range(args.turns)]
              for c in range(args.conversations)] for u in range(args.users)]
    return system, users


async def run_users(url: str, system: str, users: list[list[list[str]]], args, speculate: bool
                    ) -> tuple[Result, list[float]]:
    """All users' conversations; (every turn into the result, the follow-up turns' TTFTs)."""
    result, follow = Result(), []
    nvext = {"agent_hints": {"speculative_prefill": True}} if speculate else {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        async def user(u: int, conversations: list[list[str]]) -> None:
            pause = random.Random(args.seed * 1000 + u)
            for c, messages in enumerate(conversations):
                history = [{"role": "system", "content": system}]
                for t, message in enumerate(messages):
                    if t or c:  # a tool runs, or a person reads, before the next turn
                        await asyncio.sleep(pause.uniform(args.think_ms / 2, args.think_ms) / 1e3)
                    history.append({"role": "user", "content": message})
                    body = {"model": "tiny", "messages": history, "max_tokens": args.max_tokens, "ignore_eos": True,
                            "nvext": nvext}
                    text: list[str] = []
                    ttft = await stream_one(session, url, body, result, text)
                    if t and ttft is not None:
                        follow.append(ttft)
                    history.append({"role": "assistant", "content": "".join(text)})

        start = time.perf_counter()
        await asyncio.gather(*(user(u, convs) for u, convs in enumerate(users)))
        result.elapsed = time.perf_counter() - start
    return result, follow


def run_once(stack: str, spec: str, speculate: bool, model: Path, system: str, users, args) -> dict:
    mode, _, extra = spec.partition(":")
    env, python = stack_env(stack)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="agent-turns-")), model, "file", env, python=python)
    try:
        workers = [cluster.mocker("--speedup-ratio", "1", "--num-gpu-blocks-override", str(args.blocks),
                                  "--block-size", str(args.block_size)) for _ in range(2)]
        cluster.frontend("--router-mode", mode, *extra.split())
        if stack == "anchor":  # its /health does not name models: wait for the listing, then both workers warm
            wait_until(lambda: cluster.models() == ["tiny"], 120, "model listed")
            time.sleep(3)
        else:
            cluster.wait_workers("tiny", 2, timeout=120)
        res, follow = asyncio.run(run_users(cluster.base_url + "/v1/chat/completions", system, users, args, speculate))
        return {"ttft": (pct(res.ttft, 0.5) * 1e3, pct(res.ttft, 0.99) * 1e3),
                "follow": (pct(follow, 0.5) * 1e3, pct(follow, 0.99) * 1e3),
                "itl": (pct(res.itl, 0.5) * 1e3, pct(res.itl, 0.99) * 1e3),
                "cached": res.cached_tokens / max(res.prompt_tokens, 1), "errors": res.errors,
                "served": "/".join(str(_count(w)) for w in workers), "warmups": _warmups(cluster.base_url)}
    finally:
        cluster.stop()


def _warmups(base_url: str) -> str:
    text = http_get(base_url + "/metrics")[1].decode()
    done = metric_value(text, "dynamo_frontend_speculative_prefills_total", {"outcome": "done"})
    return "-" if done is None else str(int(done))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["kv"],
                        help='router modes, each optionally with frontend flags: "round-robin:--router-session-'
                        'affinity-ttl-secs 300"')
    parser.add_argument("--stacks", nargs="+", choices=["ours", "anchor"], default=["ours"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--conversations", type=int, default=2, help="per user, one after the other")
    parser.add_argument("--turns", type=int, default=6, help="per conversation")
    parser.add_argument("--system-words", type=int, default=1500)
    parser.add_argument("--message-words", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=200, help="every answer's length (ignore_eos)")
    parser.add_argument("--think-ms", type=float, default=1500.0)
    parser.add_argument("--blocks", type=int, default=8192)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = long_context(build_tiny_model(Path(tempfile.mkdtemp(prefix="agent-model-")) / "tiny", weights=False))
    system, users = plan(args)
    runs: dict[tuple[str, str, bool], list[dict]] = {}
    order = [(s, m, sp) for s in args.stacks for m in args.modes for sp in (False, True)]
    for r in range(args.rounds):
        for key in (order if r % 2 == 0 else order[::-1]):
            runs.setdefault(key, []).append(run_once(*key, model, system, users, args))
    rows = []
    for (stack, spec, speculate), results in runs.items():
        rows.append((f"{'Dynamo 1.6.1' if stack == 'anchor' else 'ours'} {spec}"
                     + (" + speculative prefill" if speculate else ""),
                     _spread([x["ttft"][0] for x in results], "{:.0f}") + " / "
                     + _spread([x["ttft"][1] for x in results], "{:.0f}"),
                     _spread([x["follow"][0] for x in results], "{:.0f}") + " / "
                     + _spread([x["follow"][1] for x in results], "{:.0f}"),
                     _spread([x["itl"][0] for x in results], "{:.1f}") + " / "
                     + _spread([x["itl"][1] for x in results], "{:.1f}"),
                     _spread([x["cached"] for x in results], "{:.2f}"),
                     " ".join(x["served"] for x in results), " ".join(x["warmups"] for x in results),
                     sum(x["errors"] for x in results)))
    n = args.users * args.conversations * args.turns
    print_table(f"agent turns: {n} streaming chat turns x {args.rounds} round(s), {args.users} users x "
                f"{args.conversations} conversations x {args.turns} turns, {args.system_words}-word shared system "
                f"prompt, {args.message_words}-word messages, {args.max_tokens}-token answers, think "
                f"U({args.think_ms / 2:.0f}, {args.think_ms:.0f}) ms; 2 mockers x {args.blocks} blocks of "
                f"{args.block_size}; median [min-max] over rounds",
                ("stack, router, turns", "TTFT p50 / p99 ms", "follow-up turns TTFT p50 / p99 ms",
                 "ITL p50 / p99 ms (a turn's mean)", "cached fraction",
                 "requests per worker", "warmups done", "errors"), rows)


if __name__ == "__main__":
    main()

"""`examples/backends/mocker/deploy/disagg_planner.yaml` as its planner judges it: each mocker's KV holds
far more than one request (the audit's 48 blocks refused a ~300-word prompt, 49 blocks), and the load a
1-3 req/s trickle puts on decode stays under the `latency` target's up threshold, so the pools do not flap
(decode 1 -> 2 -> 1 every 4 s before), while a dozen concurrent chats still scale decode up (the e2e test's
burst, `test_e2e_deploy_planner.py`)."""

from __future__ import annotations

import json
import math

import yaml

from dynamo.llm.forward_pass import ForwardPassMetrics, ScheduledRequests
from dynamo.planner.config import convert
from dynamo.planner.load_scaling import EngineLimits, reactive_decision
from tests.fixtures.procs import REPO

EXAMPLE = REPO / "examples/backends/mocker/deploy/disagg_planner.yaml"
PROMPT_300_WORDS = 727  # tokens of 300 words with the tiny model's tokenizer (the audit's refused request)
PROMPT_200_WORDS, AUDIT_OSL = 483, 50  # the audit's 1-3 req/s load
CHAT_60_WORDS, BURST_TOKENS = 187, 100  # the e2e test's burst requests (12 at once)


def example() -> tuple[dict, dict[str, list[str]]]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    services = doc["spec"]["services"]
    planner = json.loads(services["Planner"]["extraPodSpec"]["mainContainer"]["args"][1])
    args = {name: svc["extraPodSpec"]["mainContainer"]["args"] for name, svc in services.items()
            if name.startswith("Mocker")}
    return planner, args


def kv_tokens(args: list[str]) -> tuple[int, int]:
    value = lambda flag: int(args[args.index(flag) + 1])  # noqa: E731
    return value("--num-gpu-blocks-override") * value("--block-size"), value("--block-size")


def blocks(tokens: int, block: int) -> int:
    return math.ceil(tokens / block)


def decode_decision(cfg, kv_in_use: int, capacity: int, replicas: int = 1):
    fpm = ForwardPassMetrics(worker_id="1", scheduled_requests=ScheduledRequests(num_decode_requests=1,
                                                                                 sum_decode_kv_tokens=kv_in_use))
    limits = EngineLimits(context_length=2048, max_kv_tokens=capacity, max_num_batched_tokens=8192, max_num_seqs=256)
    return reactive_decision(cfg, "decode", [(fpm, limits)] * replicas, replicas)


def test_every_mocker_holds_several_long_requests():
    _, args = example()
    for name, argv in args.items():
        capacity, block = kv_tokens(argv)
        one = blocks(PROMPT_300_WORDS + AUDIT_OSL, block) * block
        assert capacity >= 4 * one, (name, capacity, one)


def test_low_load_holds_and_a_burst_scales_decode_up():
    planner, args = example()
    cfg = convert(planner)
    capacity, block = kv_tokens(args["MockerDecodeWorker"])
    audit_request = blocks(PROMPT_200_WORDS + AUDIT_OSL, block) * block
    for in_flight in (1, 2, 3):  # 1-3 req/s at a few hundred ms each: up to three at once
        assert decode_decision(cfg, in_flight * audit_request, capacity).target == 1
    assert decode_decision(cfg, blocks(PROMPT_300_WORDS + AUDIT_OSL, block) * block, capacity).target == 1
    burst = 12 * blocks(CHAT_60_WORDS + BURST_TOKENS, block) * block
    assert decode_decision(cfg, burst, capacity).target == 2

"""Forward-pass metrics derived from vLLM's stat-logger inputs (`SchedulerStats`,
`IterationStats`): objects with vLLM's attribute names, so this runs without vLLM."""

from __future__ import annotations

from types import SimpleNamespace

from dynamo.vllm.forward_pass import FpmDeriver


def sched(**kw):
    base = dict(num_running_reqs=0, num_waiting_reqs=0, kv_cache_usage=0.0, iteration_details=None)
    return SimpleNamespace(**{**base, **kw})


def test_exact_step_from_iteration_details():
    d = FpmDeriver("w1", 0, lambda: 10_000)
    details = SimpleNamespace(num_ctx_requests=2, num_ctx_tokens=700, num_generation_requests=5,
                              num_generation_tokens=5, elapsed_ms=12.5, is_dummy=False)
    f = d.derive(sched(num_running_reqs=7, num_waiting_reqs=1, kv_cache_usage=0.25, iteration_details=details), None)
    s = f.scheduled_requests
    assert (s.num_prefill_requests, s.sum_prefill_tokens, s.num_decode_requests) == (2, 700, 5)
    assert s.sum_decode_kv_tokens == 2500 and f.wall_time == 0.0125 and f.queued_requests.num_prefill_requests == 1


def test_inferred_step_and_queue_estimate_without_details():
    d = FpmDeriver("w1", 1, lambda: 1000)
    finished = SimpleNamespace(finished_requests=[SimpleNamespace(num_prompt_tokens=300)], num_prompt_tokens=0)
    d.derive(sched(num_running_reqs=1, kv_cache_usage=0.1), finished)
    f = d.derive(sched(num_running_reqs=3, num_waiting_reqs=2, kv_cache_usage=0.5),
                 SimpleNamespace(finished_requests=[], num_prompt_tokens=128))
    assert f.dp_rank == 1 and f.counter_id == 2 and f.wall_time > 0
    assert f.scheduled_requests.sum_prefill_tokens == 128 and f.scheduled_requests.num_decode_requests == 3
    assert f.scheduled_requests.sum_decode_kv_tokens == 500
    assert f.queued_requests.sum_prefill_tokens == 600  # 2 waiting x 300 average prompt
    idle = d.derive(sched(), None)
    assert idle.idle and idle.wall_time == 0.0

"""`observe.WorkWindow`: how busy an engine was prefilling, from the FPMs the relay lets through (thinned:
`counter_id` gaps; idle: the last message repeated)."""

from __future__ import annotations

from types import SimpleNamespace

from dynamo.llm.forward_pass import ForwardPassMetrics, ScheduledRequests
from dynamo.planner.config import PlannerConfig
from dynamo.planner.load_scaling import EngineLimits
from dynamo.planner.observe import Engine, FpmCollector, WorkWindow


def fpm(counter: int, tokens: int, wall: float = 0.5) -> ForwardPassMetrics:
    return ForwardPassMetrics(worker_id="a", counter_id=counter, wall_time=wall,
                              scheduled_requests=ScheduledRequests(num_prefill_requests=1, sum_prefill_tokens=tokens))


def test_thinned_iterations_count_at_the_sampled_mean_and_repeats_not_at_all():
    w = WorkWindow()
    w.add(fpm(10, 5000), 0.0)  # the first message is the baseline only
    w.add(fpm(13, 1000, 0.2), 1.0)  # 3 iterations, 1 sampled
    w.add(fpm(16, 2000, 0.4), 2.0)
    w.add(fpm(16, 2000, 0.4), 3.0)  # the relay's repeat while idle
    w.add(fpm(18, 0, 0.3), 3.5)  # decode only: not prefill time
    assert w.take(4.0, 2.0) == (0.2 + 0.4 + 0.0) / 3 * 8 / 4.0
    assert w.take(5.0, 2.0) is None  # a window shorter than asked for says nothing yet
    assert w.take(6.0, 2.0) is None  # nothing new for 2 s, the last message busy: a stalled engine, unknown
    w.add(ForwardPassMetrics(worker_id="a", counter_id=19), 6.5)  # the all-zero idle message
    w.add(ForwardPassMetrics(worker_id="a", counter_id=19), 7.5)  # ... repeated
    assert w.take(8.5, 2.0) == 0.0
    assert w.take(10.5, 2.0) == 0.0  # nothing new for 2 s after an idle message: idle


def test_an_engine_not_seen_has_no_rate():
    assert WorkWindow().take(10.0, 1.0) is None


def test_an_engine_restart_starts_a_new_baseline_not_a_silence():
    # Review: a restarted engine counts from 1 again; dropping every message below the old counter read 0% busy
    w = WorkWindow()
    w.add(fpm(1000, 100, 0.1), 0.0)
    w.add(ForwardPassMetrics(worker_id="a", counter_id=1), 1.0)  # restarted: its start-up idle message
    for i in range(2, 42):  # then busy: 40 prefills of 0.1 s, back to back
        w.add(fpm(i, 1000, 0.1), 1.0 + 0.1 * i)
    # 40 iterations since the restart, each 0.1 s (the first after the idle message at the engine's mean step)
    assert abs(w.take(10.0, 5.0) - 40 * 0.1 / 10.0) < 1e-9
    w.add(fpm(41, 1000, 0.1), 11.0)  # a repeat
    assert w.take(20.0, 5.0) is None  # nothing new, the last message busy: unknown (hold), not idle


def vllm_prefill_fpms(monkeypatch, burst: bool) -> list[tuple[float, ForwardPassMetrics]]:
    """What a disagg prefill engine on vLLM's default FPM path (no --enable-logging-iteration-details) sends,
    with arrival times: a 1000-token prefill of 50 ms every 3 s, each request done in its step, so each record
    is followed by the idle message that the relay repeats every second. `burst`: two requests at t=1, the
    second's step right after the first's."""
    from dynamo.vllm import forward_pass

    now = [0.0]
    monkeypatch.setattr(forward_pass.time, "monotonic", lambda: now[0])
    d = forward_pass.FpmDeriver("a", 0, lambda: 100_000)
    out = [(0.0, d.heartbeat())]  # log_engine_initialized
    step = SimpleNamespace(num_prompt_tokens=1000, finished_requests=[SimpleNamespace(num_prompt_tokens=1000)])
    done = SimpleNamespace(num_running_reqs=0, num_waiting_reqs=0, kv_cache_usage=0.0)
    for k in range(10):
        now[0] = 3.0 * k + 1.05
        if burst and k == 0:
            out.append((now[0], d.derive(SimpleNamespace(num_running_reqs=0, num_waiting_reqs=1,
                                                         kv_cache_usage=0.0), step)))
            now[0] += 0.05
        out += [(now[0], d.derive(done, step)), (now[0], d.heartbeat())]
        out += [(now[0] + s, out[-1][1]) for s in (1.0, 2.0)]  # the relay's repeats
    return out


def test_vllm_default_fpms_do_not_count_an_idle_gap_as_prefill(monkeypatch):
    # Review: vLLM's default path times a step from the previous record, so the record after an idle gap carries
    # the gap: 50 ms every 3 s read 0.998 busy and a vLLM prefill pool never scaled down
    fpms = vllm_prefill_fpms(monkeypatch, burst=False)
    assert fpms[1][1].wall_time > 1.0 and fpms[5][1].wall_time > 2.9  # the gap, as sent
    w = WorkWindow()
    for t, m in fpms:
        w.add(m, t, lambda: 0.05)  # the caller's estimate of a 1000-token step (the perf model)
    assert abs(w.take(31.0, 15.0) - 10 * 0.05 / 31.0) < 1e-9
    w = WorkWindow()
    for t, m in fpms:
        w.add(m, t)
    assert w.take(31.0, 15.0) is None  # no step ever timed, no estimate: unknown, the pool holds
    w = WorkWindow()
    for t, m in vllm_prefill_fpms(monkeypatch, burst=True):  # one step timed: the others count at it
        w.add(m, t)
    assert abs(w.take(31.1, 15.0) - 11 * 0.05 / 31.1) < 1e-9


def test_the_perf_model_learns_no_idle_gap(monkeypatch):
    c = PlannerConfig(load_min_observations=1)
    col = FpmCollector(None, c)
    col.cards = {7: Engine("prefill", "prefill", EngineLimits(8192, 100_000, 2048, 256), "m")}
    col._ensure_model(col.cards[7])
    for t, m in vllm_prefill_fpms(monkeypatch, burst=True):
        col.clock = lambda t=t: t
        col.observe(7, m)
    model = col.models["prefill"]
    assert model.count == 1 and abs(model.predict((1000,)) - 0.05) < 1e-9

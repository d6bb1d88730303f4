"""`observe.WorkWindow`: how busy an engine was prefilling, from the FPMs the relay lets through (thinned:
`counter_id` gaps; idle: the last message repeated)."""

from __future__ import annotations

from dynamo.llm.forward_pass import ForwardPassMetrics, ScheduledRequests
from dynamo.planner.observe import WorkWindow


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
    assert w.take(6.0, 2.0) == 0.0  # nothing new for 2 s: idle


def test_an_engine_not_seen_has_no_rate():
    assert WorkWindow().take(10.0, 1.0) is None

"""routing_quality's bookkeeping: prompt families, the pinned reference, the per-request trace."""

from benchmarks.routing_quality import write_trace
from benchmarks.routing_workloads import families, pinning


def test_families_are_numbered_in_the_order_requests_go_out():
    a, b, c = [1] * 64, [2] * 64, [3] * 64
    plan = [[a + [9], c], [b, a + [8]]]  # users' first requests go out first: a, b; then c
    assert families(plan) == {tuple(a): 0, tuple(b): 1, tuple(c): 2}
    assert pinning(plan, [10, 20]) == {tuple(a): 10, tuple(b): 20, tuple(c): 10}


def test_trace_rows_are_sorted_by_send_time_and_numbered_per_run(tmp_path):
    rows = [(10.5, "u1#0/f1", 7, 100, 64, 0.0521), (10.0, "u0#0/f0", None, 100, 0, None)]
    first = write_trace(tmp_path, "ours-kv:--flag 2", rows)
    second = write_trace(tmp_path, "ours-kv:--flag 2", rows)
    assert (first.name, second.name) == ("ours-kv_--flag_2-1.csv", "ours-kv_--flag_2-2.csv")
    assert first.read_text().splitlines() == [
        "sent_s,tag,worker,prompt_tokens,cached_tokens,ttft_ms",
        "0.000,u0#0/f0,,100,0,",  # no worker reported, no token
        "0.500,u1#0/f1,7,100,64,52.1",
    ]


def test_mixed_deals_both_kinds_of_prompt_to_every_user_in_no_fixed_alternation():
    import argparse

    from benchmarks.routing_workloads import WORKLOADS, shared_prefix, users

    args = argparse.Namespace(workload="mixed", seed=0, max_tokens=32, **WORKLOADS["mixed"])
    plan = users(args)
    shared = shared_prefix(plan)
    kinds = [[(u, i) in shared for i in range(len(prompts))] for u, prompts in enumerate(plan)]
    assert all(any(k) and not all(k) for k in kinds)  # nobody sends only one kind
    in_order = [k for turn in zip(*kinds) for k in turn]  # the order requests go out
    assert 0.35 < sum(in_order) / len(in_order) < 0.65
    # Round-robin's two workers (every other request) each see both kinds.
    assert all(0 < sum(in_order[w::2]) < len(in_order[w::2]) for w in (0, 1))

"""The global router's local routers per pool namespace: the turn among a pool's routers."""

from __future__ import annotations

from dynamo.global_router.handler import PoolRouters


def test_each_pool_namespace_keeps_its_own_turn():
    """A disaggregated request asks the prefill pool, then the decode pool: with one shared turn each pool
    saw every other turn and sent everything to one of its routers."""
    routers = PoolRouters(None, {"prefill", "decode"})
    routers.addresses = {"prefill": {1: "p:1", 2: "p:2"}, "decode": {3: "d:1", 4: "d:2"}}
    firsts = []
    for _ in range(4):
        firsts.append(routers.in_turn("prefill")[0])
        firsts.append(routers.in_turn("decode")[0])
    assert firsts == ["p:1", "d:1", "p:2", "d:2"] * 2
    assert routers.in_turn("nowhere") == []

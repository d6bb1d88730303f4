"""Workers that are routed requests but never heard on this process's event plane are
flagged silent (`dynamo.router.subscriber`) and their pool's mode says so
(`dynamo.router.mode_report`)."""

from __future__ import annotations

import time

from dynamo.router.config import KvMode, KvRouterConfig
from dynamo.router.kv_router import KvRouter
from dynamo.router.mode_report import mode_report
from dynamo.router.policy import WorkerInfo
from dynamo.router.subscriber import SILENT_AFTER, ComponentFeed, KvEventFeeds, _Worker
from dynamo.runtime.discovery.mem import MemStore
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.router.test_policy import EID, pool


def feeds_with(*worker_ids: int) -> tuple[KvEventFeeds, ComponentFeed, list[bool]]:
    feeds = KvEventFeeds(MemStore(), RequestPlaneClient(), "zmq")
    changes: list[bool] = []
    feeds.on_link_change = lambda: changes.append(True)
    feed = ComponentFeed(feeds, "ns", "backend")
    feeds._feeds[("ns", "backend")] = feed
    router = KvRouter(16, KvRouterConfig())
    for wid in worker_ids:
        feed.workers[wid] = _Worker(router, None, resync=False)
    return feeds, feed, changes


def test_a_worker_routed_to_and_never_heard_is_silent_until_it_speaks():
    feeds, feed, changes = feeds_with(1, 2)
    now = time.monotonic()
    feeds.check_silence(now + 2 * SILENT_AFTER)
    assert feeds.silent == set() and not changes  # nothing routed to them: nothing expected yet
    feeds.note_routed(1)
    feeds.check_silence(time.monotonic() + SILENT_AFTER / 2)
    assert feeds.silent == set()
    feeds.check_silence(time.monotonic() + SILENT_AFTER + 0.1)
    assert feeds.silent == {1} and changes == [True]
    feeds.check_silence(time.monotonic() + SILENT_AFTER + 1)
    assert changes == [True]  # flagged once
    feed.heard(1, feed.workers[1])
    assert feeds.silent == set() and changes == [True, True]


def test_a_worker_heard_before_it_was_routed_to_is_never_silent():
    feeds, feed, changes = feeds_with(1)
    feed.heard(1, feed.workers[1])
    feeds.note_routed(1)
    feeds.check_silence(time.monotonic() + 3 * SILENT_AFTER)
    assert feeds.silent == set() and not changes


def test_a_silent_worker_that_leaves_is_forgotten():
    feeds, feed, _ = feeds_with(1)
    feeds.note_routed(1)
    feeds.check_silence(time.monotonic() + SILENT_AFTER + 1)
    assert feeds.silent == {1}
    feeds.untrack(1)
    assert feeds.silent == set()


def test_mode_when_workers_are_silent():
    workers = pool(1, 2).workers
    one = mode_report(KvMode.KV_EVENTS, workers, silent={1}, plane="zmq")
    assert one.mode == "kv-events" and one.degraded
    assert one.reason.startswith("1 of 2 workers") and "zmq" in one.reason and "DYN_EVENT_PLANE" in one.reason
    every = mode_report(KvMode.KV_EVENTS, workers, silent={1, 2}, plane="nats")
    assert every.mode == "approximate" and every.degraded and "nats" in every.reason
    non_publisher = pool(3, publishes=False).workers
    assert not mode_report(KvMode.KV_EVENTS, workers + non_publisher, silent={3}).reason.startswith("1 of")
    assert mode_report(KvMode.KV_EVENTS, (WorkerInfo(7, EID, None, "127.0.0.1:1"),), silent={7}).mode \
        == "approximate"


def test_silent_publishers_are_named_beside_workers_that_do_not_publish():
    workers = pool(1, 2).workers + pool(3, publishes=False).workers
    report = mode_report(KvMode.KV_EVENTS, workers, silent={1}, plane="zmq")
    assert report.reason.startswith("only 2 of 3 workers publish KV events; 1 of them") and "zmq" in report.reason

"""The held deletes of a re-listing watch (`discovery.resync`): pure logic, no store."""

from __future__ import annotations

from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.discovery.resync import ResyncView

GRACE = 10.0


def listed(snapshot: dict[str, bytes]) -> ResyncView:
    view = ResyncView(GRACE)
    assert view.resync(snapshot, now=0.0) == [WatchEvent("put", k, v) for k, v in sorted(snapshot.items())]
    return view


def test_first_list_reports_puts_and_holds_nothing():
    view = listed({"a": b"1", "b": b"2"})
    assert view.held == {} and view.next_deadline() is None


def test_key_missing_from_a_relist_is_held_then_deleted_after_the_grace():
    view = listed({"a": b"1", "b": b"2"})
    assert view.resync({"b": b"2"}, now=100.0) == []  # no delete yet
    assert view.next_deadline() == 100.0 + GRACE
    assert view.due(100.0 + GRACE - 0.1) == []
    assert view.due(100.0 + GRACE) == [WatchEvent("delete", "a")]
    assert view.held == {} and view.known == {"b": b"2"}


def test_held_key_reput_unchanged_is_silent_and_no_longer_held():
    view = listed({"a": b"1"})
    view.resync({}, now=5.0)
    assert view.apply(WatchEvent("put", "a", b"1")) is None
    assert view.held == {} and view.due(1e9) == []


def test_held_key_reput_with_a_new_value_is_a_put():
    view = listed({"a": b"1"})
    view.resync({}, now=5.0)
    assert view.apply(WatchEvent("put", "a", b"2")) == WatchEvent("put", "a", b"2")
    assert view.held == {} and view.known == {"a": b"2"}


def test_held_key_back_in_a_later_relist():
    view = listed({"a": b"1", "b": b"1"})
    view.resync({}, now=5.0)
    assert view.resync({"a": b"1", "b": b"9"}, now=6.0) == [WatchEvent("put", "b", b"9")]
    assert view.held == {}


def test_a_later_relist_restarts_the_grace():
    """etcd went away again before the owner could re-put: it gets a full grace once back."""
    view = listed({"a": b"1"})
    view.resync({}, now=5.0)
    view.resync({}, now=50.0)
    assert view.due(5.0 + GRACE) == [] and view.next_deadline() == 50.0 + GRACE


def test_live_deletes_are_reported_at_once():
    view = listed({"a": b"1", "b": b"2"})
    assert view.apply(WatchEvent("delete", "a")) == WatchEvent("delete", "a")
    view.resync({}, now=5.0)  # b held
    assert view.apply(WatchEvent("delete", "b")) == WatchEvent("delete", "b")
    assert view.held == {} and view.known == {} and view.due(1e9) == []


def test_live_puts_of_keys_not_held_are_always_reported():
    view = listed({"a": b"1"})
    assert view.apply(WatchEvent("put", "a", b"1")) == WatchEvent("put", "a", b"1")
    assert view.apply(WatchEvent("put", "c", b"3")) == WatchEvent("put", "c", b"3")


def test_a_watch_that_keeps_breaking_cannot_postpone_a_delete():
    view = ResyncView(grace=10.0)
    view.resync({"w": b"1"}, 0.0)
    for now in (1.0, 4.0, 7.0, 10.0):  # a re-list every 3 s, each finding the key still missing
        view.resync({}, now)
    assert view.due(10.9) == []
    assert [e.key for e in view.due(11.0)] == ["w"]  # one grace after it was first missing

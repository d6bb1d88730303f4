"""The request-plane client's watch on workers that left discovery (`RequestPlaneClient.listed`): a
connection is cut only when its worker has been unlisted for the whole window *and* silent through it;
a lease that lapsed and was re-put at once, a worker still listed, or one that is draining (GoAway) is
left alone."""

from __future__ import annotations

from dynamo.runtime.rp_client import DEPARTED_SILENT_SECS, RequestPlaneClient, _ClientConnection


class _Transport:
    def close(self) -> None:
        pass


def _client_with(address: str, last_frame: float) -> tuple[RequestPlaneClient, _ClientConnection]:
    client = RequestPlaneClient(connect_timeout=1.0)
    conn = _ClientConnection(address, client._lost)
    conn.transport = _Transport()
    conn.streams[1] = object()  # a stream open on it
    conn.last_frame = last_frame
    client._conns[address] = conn
    client._listed = set()
    return client, conn


def test_a_worker_unlisted_and_silent_for_the_whole_window_is_cut():
    client, conn = _client_with("w:1", last_frame=0.0)
    assert client._departed_and_silent(100.0) == []  # first seen unlisted now: the window starts
    assert client._departed_and_silent(100.0 + DEPARTED_SILENT_SECS - 1) == []
    assert client._departed_and_silent(100.0 + DEPARTED_SILENT_SECS) == [conn]


def test_a_lease_re_put_at_once_restarts_the_window():
    client, _ = _client_with("w:1", last_frame=0.0)
    client._departed_and_silent(100.0)
    client._listed = {"w:1"}  # back in discovery a moment later
    assert client._departed_and_silent(101.0) == []
    client._listed = set()
    assert client._departed_and_silent(100.0 + DEPARTED_SILENT_SECS) == []  # unlisted since 110, not 100


def test_a_worker_that_keeps_sending_is_not_cut():
    client, conn = _client_with("w:1", last_frame=0.0)
    client._departed_and_silent(100.0)
    conn.last_frame = 105.0  # still streaming: a live worker that lost its lease
    assert client._departed_and_silent(100.0 + DEPARTED_SILENT_SECS) == []


def test_a_draining_or_idle_connection_is_not_cut():
    client, conn = _client_with("w:1", last_frame=0.0)
    conn.going_away = True
    client._departed_and_silent(0.0)
    assert client._departed_and_silent(1000.0) == []
    conn.going_away, conn.streams = False, {}
    assert client._departed_and_silent(2000.0) == []


def test_nothing_is_watched_until_the_caller_lists_workers():
    client, _ = _client_with("w:1", last_frame=0.0)
    client._listed = None
    assert client._departed_and_silent(0.0) == []
    assert client._departed_and_silent(1000.0) == []

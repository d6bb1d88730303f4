"""TCP KV transport: chunking, checksums, bounded staging with backpressure and expiry,
concurrent pulls. Real sockets on loopback, no engine."""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dynamo.kv_transfer import ChecksumError, KvSender, StagingStore, TooLarge, TransferNotFound, pull, wire


@pytest.fixture()
def sender():
    s = KvSender(chunk_bytes=1000, cap_bytes=1 << 20, ttl_s=30).start()
    yield s
    s.close()


def test_chunk_views_never_span_segments():
    segs = [memoryview(b"a" * 2500), memoryview(b""), memoryview(b"b" * 1000)]
    chunks = wire.chunk_views(segs, 1000)
    assert [len(c) for c in chunks] == [1000, 1000, 500, 1000]
    assert b"".join(bytes(c) for c in chunks) == b"a" * 2500 + b"b" * 1000


def test_round_trip_multi_segment_payload(sender):
    segs = [os.urandom(2345), os.urandom(10), os.urandom(4000)]
    assert sender.stage("req-1", segs, {"num_blocks": 3, "layers": ["l0", "l1"]})
    got = pull("127.0.0.1", sender.port, "req-1")
    assert bytes(got.data) == b"".join(segs)
    assert got.meta == {"num_blocks": 3, "layers": ["l0", "l1"]}
    assert got.attempts == 1
    # claimed: memory released, a second pull finds nothing
    wait_for(lambda: sender.store.stats.claimed == 1)
    assert sender.store.held_bytes == 0 and sender.store.stats.claimed == 1
    with pytest.raises(TransferNotFound):
        pull("127.0.0.1", sender.port, "req-1", wait_s=0)


def test_pull_waits_for_late_staging(sender):
    threading.Timer(0.2, lambda: sender.stage("late", [b"x" * 5000])).start()
    got = pull("127.0.0.1", sender.port, "late", wait_s=5)
    assert bytes(got.data) == b"x" * 5000


def test_unknown_transfer_and_dead_sender():
    s = KvSender().start()
    port = s.port
    with pytest.raises(TransferNotFound):
        pull("127.0.0.1", port, "nope", wait_s=0.1)
    s.close()
    with pytest.raises(wire.TransferError):
        pull("127.0.0.1", port, "nope", wait_s=0, timeout=2)


class CorruptingServer:
    """Speaks the wire protocol but flips a byte of chunk 1 on the first `bad_sends` sends."""

    def __init__(self, payload: bytes, bad_sends: int) -> None:
        self.payload, self.bad_sends, self.acks = payload, bad_sends, []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                wire.recv_frame(conn, wire.PullRequest)
                chunks = wire.chunk_views([memoryview(self.payload)], 100)
                wire.send_frame(conn, wire.PullHeader(status="ok", total_bytes=len(self.payload),
                                                      num_chunks=len(chunks)))
                for i, chunk in enumerate(chunks):
                    data = bytearray(chunk)
                    digest = wire.checksum(data)
                    if i == 1 and self.bad_sends > 0:
                        data[3] ^= 0xFF  # corrupted in flight, checksum of the original
                    wire.send_chunk(conn, memoryview(data), digest)
                self.bad_sends -= 1
                self.acks.append(wire.recv_frame(conn, wire.PullAck))


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_checksum_mismatch_detected_and_retried():
    payload = os.urandom(450)
    server = CorruptingServer(payload, bad_sends=1)
    got = pull("127.0.0.1", server.port, "t", retries=2)
    assert bytes(got.data) == payload and got.attempts == 2
    wait_for(lambda: len(server.acks) == 2)
    assert [a.ok for a in server.acks] == [False, True]
    assert "chunks [1]" in server.acks[0].error
    server.listener.close()


def test_checksum_mismatch_gives_up_after_retries():
    server = CorruptingServer(os.urandom(450), bad_sends=10)
    with pytest.raises(ChecksumError):
        pull("127.0.0.1", server.port, "t", retries=1)
    wait_for(lambda: len(server.acks) == 2)
    assert [a.ok for a in server.acks] == [False, False]
    server.listener.close()


def test_failed_ack_keeps_transfer_for_retry(sender):
    sender.stage("keep", [b"k" * 3000])
    entry = sender.store.checkout("keep")
    sender.store.finish("keep", claimed=False)  # as after a receiver-side checksum failure
    assert entry is not None and sender.store.held_bytes == 3000
    assert bytes(pull("127.0.0.1", sender.port, "keep").data) == b"k" * 3000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_store_cap_backpressure_and_release():
    store = StagingStore(cap_bytes=1000, ttl_s=60)
    assert store.put("a", [memoryview(b"a" * 600)], {})
    assert not store.put("b", [memoryview(b"b" * 600)], {}, timeout=0.05)  # no room: backpressure
    assert store.stats.rejected == 1 and store.stats.waiting == 0
    with pytest.raises(TooLarge):
        store.put("huge", [memoryview(b"h" * 1001)], {})

    done: list[tuple[bool, float]] = []

    def put_b() -> None:
        ok = store.put("b", [memoryview(b"b" * 600)], {}, timeout=60)
        done.append((ok, time.monotonic()))

    waiter = threading.Thread(target=put_b, daemon=True)
    waiter.start()
    wait_for(lambda: store.stats.waiting == 1 or bool(done), timeout=30)
    assert store.stats.waiting == 1 and not done  # blocked inside put() for room: neither not yet called nor returned
    released = time.monotonic()
    store.checkout("a")
    store.finish("a", claimed=True)
    waiter.join(30)
    assert [ok for ok, _ in done] == [True] and store.held_bytes == 600
    assert done[0][1] >= released  # it returned only once room was made
    assert store.stats.waiting == 0 and store.stats.rejected == 2  # the timed-out put and the too-large one


def test_store_expires_unclaimed_but_not_pinned():
    clock = FakeClock()
    store = StagingStore(cap_bytes=1000, ttl_s=10, clock=clock)
    store.put("old", [memoryview(b"o" * 400)], {})
    store.put("pinned", [memoryview(b"p" * 400)], {})
    assert store.checkout("pinned") is not None
    clock.now = 11
    assert store.expire() == 1
    assert store.held_bytes == 400 and store.stats.expired == 1
    assert store.checkout("old") is None
    store.finish("pinned", claimed=False)  # back to staged with a fresh TTL
    clock.now = 20
    assert store.expire() == 0
    clock.now = 22
    assert store.expire() == 1 and store.held_bytes == 0


def test_expiry_makes_room_for_a_waiting_put():
    store = StagingStore(cap_bytes=1000, ttl_s=0.2)
    store.put("stale", [memoryview(b"s" * 900)], {})
    assert store.put("fresh", [memoryview(b"f" * 900)], {}, timeout=3)
    assert store.stats.expired == 1


def test_checkout_pins_against_a_second_puller():
    store = StagingStore(cap_bytes=1000, ttl_s=60)
    store.put("x", [memoryview(b"x")], {})
    assert store.checkout("x") is not None
    assert store.checkout("x", wait_s=0.05) is None


def test_concurrent_transfers(sender):
    payloads = {f"req-{i}": os.urandom(20_000 + i * 997) for i in range(16)}
    sender.store.cap_bytes = 64 << 20

    def stage_and_pull(tid: str) -> bytes:
        threading.Timer(0.01, lambda: sender.stage(tid, [payloads[tid]])).start()
        return bytes(pull("127.0.0.1", sender.port, tid, wait_s=5).data)

    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(payloads, pool.map(stage_and_pull, payloads)))
    assert results == payloads
    wait_for(lambda: sender.store.stats.claimed == 16)
    assert sender.store.stats.claimed == 16 and sender.store.held_bytes == 0
    assert sender.bytes_sent == sum(len(p) for p in payloads.values())


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_sender_threads_leave_the_engine_cores_binding():
    """An engine pins its process to its compute cores; the sender, created inside it, must
    not serve pulls only from those cores (a busy engine there starves them)."""
    allowed = os.sched_getaffinity(0)
    pinned = {min(allowed)}
    seen: dict[str, set[int]] = {}

    def engine_thread() -> None:
        os.sched_setaffinity(0, pinned)  # what vLLM's CPU worker does to its process
        snd = KvSender().start()
        try:
            snd.stage("t1", [b"x" * 1000])
            assert pull("127.0.0.1", snd.port, "t1").data == bytearray(b"x" * 1000)
            seen["engine"] = os.sched_getaffinity(0)
            seen["sender"] = os.sched_getaffinity(snd._thread.native_id)
        finally:
            snd.close()

    runner = threading.Thread(target=engine_thread)
    runner.start()
    runner.join(60)
    assert seen["engine"] == pinned  # the engine's own binding is left alone
    assert seen["sender"] == allowed

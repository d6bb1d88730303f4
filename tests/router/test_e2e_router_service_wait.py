"""`python -m dynamo.router --wait-for-workers-secs`: a router service whose pool has no worker holds a
request (counted in its metrics) until a worker registers, then serves it; a caller that leaves ends the
wait; without the setting the answer is `no_workers` at once, as NVIDIA Dynamo's router answers.
A SIGTERMed router service relays the streams it carries to their end (its drain), then exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import msgspec
import pytest

from dynamo.llm.protocol import PreprocessedRequest, StopConditions, output_decoder, request_encoder
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from dynamo.runtime.wire import ErrorCode
from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until
from tests.router.e2e_helpers import BLOCK, SMALL_KV, MODEL, tokens

pytestmark = pytest.mark.e2e

WAITING = "dynamo_component_router_requests_waiting_for_workers"


def _request(max_tokens: int = 3) -> bytes:
    return request_encoder.encode(PreprocessedRequest(
        request_id=uuid.uuid4().hex, model=MODEL, token_ids=tokens(7, 40),
        stop_conditions=StopConditions(max_tokens=max_tokens, ignore_eos=True)))


async def router_addresses(kv_root: str, count: int, namespace: str = "dynamo", timeout: float = 60) -> list[str]:
    """The request-plane addresses of `count` router services of `namespace`, once registered."""
    store = make_store("file", root=kv_root)
    await store.start()
    try:
        end = time.monotonic() + timeout
        while len(found := await store.get_prefix(f"v1/instances/{namespace}/router/generate/")) < count:
            assert time.monotonic() < end, "router services not registered"
            await asyncio.sleep(0.2)
        return [msgspec.json.decode(v)["transport"]["tcp"] for v in found.values()]
    finally:
        await store.close()


async def generate(client: RequestPlaneClient, address: str) -> list[int]:
    """A 3-token request through the router at `address`: the token ids; the router told if the caller leaves."""
    stream = await client.open_stream(address, "generate", _request())
    out: list[int] = []
    try:
        async for payload in stream:
            out += output_decoder.decode(payload).token_ids
    except BaseException:
        stream.cancel()  # the caller leaves: the router is told
        raise
    return out


def _waiting(router) -> float:
    text = http_get(f"http://127.0.0.1:{router.system_port}/metrics")[1].decode()
    return metric_value(text, WAITING) or 0.0


def _router(c: Cluster, wait: str):
    port = free_port()
    router = c.start("dynamo.router", ["--endpoint", "dynamo.backend.generate", "--router-block-size", str(BLOCK),
                                       "--wait-for-workers-secs", wait],
                     env={"DYN_SYSTEM_PORT": str(port)}, name=f"router-wait-{wait}")
    router.system_port = port  # type: ignore[attr-defined]
    return router


async def _scenario(c: Cluster, holding, plain, kv_root: str) -> None:
    client = RequestPlaneClient()
    try:
        addresses = await router_addresses(kv_root, 2)
        by_port = {}
        for address in addresses:  # which address is which router: the plain one answers at once
            try:
                await asyncio.wait_for(generate(client, address), 5)
            except StreamError as exc:
                assert exc.code == ErrorCode.NO_WORKERS, exc
                by_port["plain"] = address
            except asyncio.TimeoutError:
                by_port["holding"] = address
        assert set(by_port) == {"plain", "holding"}, by_port
        wait_until(lambda: _waiting(holding) == 0, 30, "the timed-out wait to end")

        # A caller that leaves ends its wait.
        gone = asyncio.ensure_future(generate(client, by_port["holding"]))
        await _until(lambda: _waiting(holding) == 1, "the request held")
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        await _until(lambda: _waiting(holding) == 0, "the left request's wait to end")

        # A held request is served by the worker that comes.
        held = asyncio.ensure_future(generate(client, by_port["holding"]))
        await _until(lambda: _waiting(holding) == 1, "the request held")
        assert not held.done()
        c.mocker(*SMALL_KV)
        got = await asyncio.wait_for(held, 90)
        assert len(got) == 3, got
        assert _waiting(holding) == 0
        assert len(await generate(client, by_port["plain"])) == 3  # the plain router serves once workers exist
    finally:
        await client.close()


async def _until(predicate, what: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_router_service_holds_requests_until_a_worker_registers(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        holding, plain = _router(c, "120"), _router(c, "0")
        asyncio.run(_scenario(c, holding, plain, str(c.tmp / "kv")))
        assert "no workers available" not in holding.log()
    finally:
        c.stop()


async def _stream_through(address: str, router, tokens_wanted: int) -> list[int]:
    """A long stream through the router, which is SIGTERMed after its first outputs."""
    client = RequestPlaneClient()
    try:
        stream = await client.open_stream(address, "generate", _request(tokens_wanted))
        sent = False
        out: list[int] = []
        async for payload in stream:
            out += output_decoder.decode(payload).token_ids
            if len(out) >= 5 and not sent:
                router.popen.send_signal(signal.SIGTERM)
                sent = True
        return out
    finally:
        await client.close()


def test_a_sigterm_router_service_relays_its_stream_to_the_end(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file", {"DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "1"})
    try:
        c.mocker("--speedup-ratio", "0.5")
        router = _router(c, "0")
        address = asyncio.run(router_addresses(str(c.tmp / "kv"), 1))[0]
        wait_until(lambda: _has_worker(address), 60, "the router to see its worker")
        got = asyncio.run(_stream_through(address, router, 300))  # ~6 s at this speed: far past the grace
        assert len(got) == 300
        assert router.popen.wait(60) == 0, router.log()
    finally:
        c.stop()


def _has_worker(address: str) -> bool:
    async def once() -> bool:
        client = RequestPlaneClient()
        try:
            return len(await generate(client, address)) == 3
        except StreamError:
            return False
        finally:
            await client.close()
    return asyncio.run(once())

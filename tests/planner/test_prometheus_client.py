"""The planner's Prometheus client against a real HTTP(S) server in the test (a stand-in for Prometheus'
`/api/v1/query`, recording what reaches it): Dynamo 1.6.1's `metric_pulling_prometheus_*` settings, as the
planner builds its client from a loaded config (`prometheus_for`), reach the wire: the bearer token (a
token file re-read at each query), extra query parameters, TLS verification off or against a CA bundle,
and the request timeout."""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import aiohttp
import pytest
from aiohttp import web

from dynamo.planner.__main__ import prometheus_for
from dynamo.planner.config import PlannerArgs, load_config
from dynamo.planner.prometheus import PrometheusClient
from dynamo.runtime.net import free_port
from tests.fixtures.pki import make_pki

OK = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"job": "x"}, "value": [0, "1"]}]}}


class StandIn:
    """`/api/v1/query` answering one sample; `/slow` holds the answer for `delay` seconds; records requests."""

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.seen: list[tuple[dict[str, str], dict[str, str]]] = []  # (headers, query params)
        self.delay, self.status = delay, status
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def _query(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), dict(request.query)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status, text="<html>Unauthorized</html>")
        return web.json_response(OK)

    async def start(self, tls: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/query", self._query)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=tls).start()
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def server():
    s = StandIn()
    yield s
    await s.stop()


def sla_config(url: str, **fields) -> str:
    return json.dumps({"optimization_target": "sla", "metric_pulling_prometheus_endpoint": url, **fields})


async def test_token_and_extra_query_params_from_dynamos_settings_reach_prometheus(server):
    url = await server.start()
    cfg = load_config(sla_config(url, metric_pulling_prometheus_extra_query_params={"tenant": "foo",
                                                                                     "namespace": "my-ns"}),
                      PlannerArgs(prometheus_token="t0k"))  # the token from PROMETHEUS_TOKEN
    client = prometheus_for(cfg)
    try:
        assert await client.query("up") == [({"job": "x"}, 1.0)]
    finally:
        await client.close()
    [(headers, params)] = server.seen
    assert headers["Authorization"] == "Bearer t0k"
    assert params == {"query": "up", "tenant": "foo", "namespace": "my-ns"}


async def test_a_token_file_is_reread_at_each_query_and_wins_over_the_token(server, tmp_path):
    url = await server.start()
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    cfg = load_config(sla_config(url, metric_pulling_prometheus_token="static",
                                 metric_pulling_prometheus_token_file=str(token_file)), PlannerArgs())
    client = prometheus_for(cfg)
    try:
        await client.query("up")
        token_file.write_text("rotated")  # a projected service-account token, renewed
        await client.query("up")
    finally:
        await client.close()
    assert [h["Authorization"] for h, _ in server.seen] == ["Bearer first", "Bearer rotated"]


async def test_no_token_sends_no_authorization(server):
    client = PrometheusClient(await server.start())
    try:
        await client.query("up")
    finally:
        await client.close()
    assert "Authorization" not in server.seen[0][0]


async def test_the_request_timeout_bounds_a_silent_prometheus():
    slow = StandIn(delay=1.5)
    url = await slow.start()
    cfg = load_config(sla_config(url, metric_pulling_prometheus_request_timeout_seconds=0.3), PlannerArgs())
    client = prometheus_for(cfg)
    started = time.monotonic()
    try:
        with pytest.raises(asyncio.TimeoutError):  # aiohttp's ServerTimeoutError is one
            await client.query("up")
        waited = time.monotonic() - started
    finally:
        await client.close()
        await slow.stop()
    assert waited < 1.2 and len(slow.seen) == 1


async def test_an_auth_refusal_names_the_http_status():
    refusing = StandIn(status=401)
    client = PrometheusClient(await refusing.start())
    try:
        with pytest.raises(RuntimeError, match="HTTP 401"):
            await client.query("up")
    finally:
        await client.close()
        await refusing.stop()


async def test_tls_verification_is_off_by_default_as_in_dynamo_and_a_ca_bundle_turns_it_on(server, tmp_path):
    pki = make_pki(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki["cert"], pki["key"])
    url = await server.start(tls)

    async def query(**fields) -> None:
        client = prometheus_for(load_config(sla_config(url, **fields), PlannerArgs()))
        try:
            await client.query("up")
        finally:
            await client.close()

    await query()  # Dynamo's default: metric_pulling_prometheus_ssl_verify false, a private CA is accepted
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await query(metric_pulling_prometheus_ssl_verify=True)  # the system's CAs did not sign it
    await query(metric_pulling_prometheus_ca_bundle=pki["ca"])  # verified against the bundle
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the bundle verifies, even with ssl_verify off
        await query(metric_pulling_prometheus_ca_bundle=pki["stranger"], metric_pulling_prometheus_ssl_verify=False)
    assert len(server.seen) == 2

"""Traffic observations for the `sla` throughput loop, read from a real Prometheus with
NVIDIA Dynamo 1.6.1's queries (`monitoring/traffic_metrics.py`).

Averages are `sum(increase(M_sum[Ns])) / sum(increase(M_count[Ns]))` over the frontend
histograms, filtered on the model (lower-cased) and `dynamo_namespace` (the label the
scrape config attaches; series without it also match, so a plain scrape works). Demand
is `increase(dynamo_frontend_requests_started_total[Ns])`, else `requests_total`; when
both are missing demand is unknown (None), never a made-up 0. When traffic stops, the
averages are 0/0: they come back as None and the request count as 0, so the planner can
tell "no traffic" (scale down) from "no data" (hold).
"""

from __future__ import annotations

import logging
import math
import re
import ssl
from dataclasses import dataclass

import aiohttp

log = logging.getLogger(__name__)

PREFIX = "dynamo_frontend"
AVERAGES = {
    "ttft_ms": ("time_to_first_token_seconds", 1000.0),
    "itl_ms": ("inter_token_latency_seconds", 1000.0),
    "request_duration_s": ("request_duration_seconds", 1.0),
    "isl": ("input_sequence_tokens", 1.0),
    "osl": ("output_sequence_tokens", 1.0),
}


@dataclass
class TrafficObservation:
    num_req: float | None = None  # requests in the interval; None = unknown
    isl: float | None = None
    osl: float | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    request_duration_s: float | None = None
    kv_hit_rate: float | None = None


class PrometheusClient:
    """Instant queries over HTTP(S), with Dynamo's `metric_pulling_prometheus_*` settings: a bearer token, or
    a token file re-read before every query (rotated service-account tokens need no restart; it wins over
    the token, as in Dynamo); TLS verification off (`ssl_verify=False`) or against a CA bundle (which turns
    it on whatever `ssl_verify` says); fixed query parameters on every query; `timeout` bounds connecting
    and each wait for data (Dynamo's: not a total deadline, a response still streaming may take longer)."""

    def __init__(self, url: str, timeout: float = 10.0, token: str | None = None, *, token_file: str | None = None,
                 ssl_verify: bool = True, ca_bundle: str | None = None,
                 extra_params: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self.token, self.token_file = token, token_file
        self.ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl_verify
        self.extra_params = dict(extra_params or {})
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file:
            with open(self.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Instant query; [(labels, value)]. Raises on HTTP or API errors."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout,
                                                  connector=aiohttp.TCPConnector(ssl=self.ssl))
        params = {**self.extra_params, "query": promql}
        async with self._session.get(f"{self.url}/api/v1/query", params=params, headers=self._headers()) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:  # an auth proxy's 401/403 page, say: name the status, not a JSON error
                raise RuntimeError(f"prometheus: HTTP {resp.status} {resp.reason}") from None
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data.get("resultType") == "scalar":  # e.g. `vector(0) + 1` or `scalar(...)`: one value, no labels
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    async def scalar(self, promql: str) -> float | None:
        rows = await self.query(promql)
        values = [v for _, v in rows if math.isfinite(v)]
        return sum(values) if values else None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def namespace_match(namespace: str, unlabelled: bool = False) -> str:
    """The `dynamo_namespace` matcher: the label as Dynamo sanitizes it ("-" -> "_") or as written (this
    project's routers), with or without the workers' DYN_NAMESPACE_WORKER_SUFFIX ("{namespace}-{suffix}"), and
    with `unlabelled` also series that have none (a plain scrape)."""
    sanitized, written = re.escape(namespace.replace("-", "_")), re.escape(namespace)
    alternatives = [_quote(f"{sanitized}(_.+)?"), _quote(f"{written}(-.+)?")] + ([""] if unlabelled else [])
    return f'dynamo_namespace=~"{"|".join(alternatives)}"'


def selector(model: str, namespace: str) -> str:
    return f'{{model=~"(?i){_quote(re.escape(model))}",{namespace_match(namespace, unlabelled=True)}}}'


def average_query(metric: str, window_s: int, model: str, namespace: str) -> str:
    sel = selector(model, namespace)
    by = "sum by (model, dynamo_namespace)"
    return (f"{by}(increase({PREFIX}_{metric}_sum{sel}[{window_s}s])) / "
            f"{by}(increase({PREFIX}_{metric}_count{sel}[{window_s}s]))")


DEMAND_COUNTERS = ("requests_started_total", "requests_total")


def demand_query(counter: str, window_s: int, model: str, namespace: str) -> str:
    return f"sum(increase({PREFIX}_{counter}{selector(model, namespace)}[{window_s}s]))"


def waiting_query(model: str, namespace: str) -> str:
    """Requests the frontends accepted for the model that have no first response yet: held for a worker
    (a frontend with --wait-for-workers-secs) or on their way to one."""
    return f"sum({PREFIX}_queued_requests{selector(model, namespace)})"


def router_waiting_query(namespace: str) -> str:
    """Requests the namespace's router services hold for a worker (`python -m dynamo.router
    --wait-for-workers-secs`): a global router's pool at zero, whose frontend sees the global router up."""
    return f"sum(dynamo_component_router_requests_waiting_for_workers{{{namespace_match(namespace)}}})"


def kv_hit_query(window_s: int, namespace: str) -> str:
    ns = namespace_match(namespace)
    m = "dynamo_component_router_kv_hit_rate"
    return (f'sum(increase({m}_sum{{{ns}}}[{window_s}s])) / '
            f'sum(increase({m}_count{{{ns}}}[{window_s}s]))')


async def observe(client: PrometheusClient, window_s: int, model: str, namespace: str) -> TrafficObservation:
    obs = TrafficObservation()
    for field, (metric, factor) in AVERAGES.items():
        value = await client.scalar(average_query(metric, window_s, model, namespace))
        setattr(obs, field, value * factor if value is not None else None)
    for counter in DEMAND_COUNTERS:
        if await client.query(f"count({PREFIX}_{counter}{selector(model, namespace)})"):
            # the series exist: an empty increase means no requests, not unknown
            obs.num_req = await client.scalar(demand_query(counter, window_s, model, namespace)) or 0.0
            break
    obs.kv_hit_rate = await client.scalar(kv_hit_query(window_s, namespace))
    return obs


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')

"""What an HTTP connection may cost the server before its request reaches the app: the limits
(`HttpLimits`; `HttpLimitSettings` is the config mixin that sets them from flags and `DYN_*`
variables), the tally of connections refused for breaking one (`HttpGuard`, shown as metrics by
`HttpGuardCollector`) and the short OpenAI-shaped answers those refusals get.

Why each limit exists (the frontend's audit): clients that trickle header lines or body bytes
held their connections forever, until 20,000 of them used every file descriptor of the process;
a 200 MB header value took the parser 50 s of quadratic appends while every other request
waited; a client that stopped reading and never hung up held its connection, what was buffered for
it and its request's memory for as long as it stayed. `http_protocol.py` enforces the limits on the
socket (the write deadline with `write_deadline.py`)."""

from __future__ import annotations

import http
import resource
from dataclasses import dataclass, field

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dynamo.runtime.config import setting

# Reasons a connection is answered (or closed) by the guard instead of the app; the metric's labels.
REFUSALS = ("connection_limit", "header_timeout", "body_timeout", "head_too_large", "url_too_long",
            "too_many_headers", "write_timeout")


@dataclass(frozen=True)
class HttpLimits:
    """The limits in effect on one HTTP server. Defaults follow nginx/Apache practice: 64 KiB
    of request head, 100 header fields (Envoy, Tomcat), 30 s for a request's headers, and a
    body that must keep arriving (nothing for `body_timeout` s, or less than `body_min_rate`
    bytes/s on average after a first `body_timeout` s of grace, Apache's mod_reqtimeout), and a
    client that must keep taking what is sent to it: nothing at all for `write_timeout` s while
    bytes wait for it and its connection is dropped (nginx's `send_timeout`, 60 s; 0: never)."""

    header_timeout: float = 30.0
    body_timeout: float = 30.0
    body_min_rate: float = 500.0  # bytes/s; 0: no floor on the rate, only on the gaps
    head_bytes: int = 64 << 10
    header_count: int = 100
    write_timeout: float = 60.0
    connections: int | None = None  # None: half of the process's open-file limit

    def connection_cap(self) -> int:
        """Open connections beyond which a new one is answered 503 and closed. By default half
        the open-file limit: the other half stays for worker, discovery and log descriptors."""
        if self.connections is not None:
            return self.connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft <= 0:
            soft = 1 << 20
        return max(1, soft // 2)


@dataclass
class HttpLimitSettings:
    """Config mixin: the HTTP server's connection limits (`HttpLimits`) as typed settings."""

    http_header_timeout_secs: float = setting(
        30.0, "Seconds a client has to send a request's complete headers; slower ones get 408 and are closed")
    http_body_timeout_secs: float = setting(
        30.0, "Seconds a request body may go without data (also the grace before --http-body-min-bytes-per-sec "
              "applies); past it, 408 and the connection is closed")
    http_body_min_bytes_per_sec: float = setting(
        500.0, "Slowest average rate a request body may arrive at once past its first --http-body-timeout-secs "
               "(a trickled body gets 408 and is closed; 0: no floor)")
    http_header_limit_kb: int = setting(
        64, "Largest request head (request line and headers) in KiB; a larger one gets 431 (414 when most of it "
            "is the URL) and the connection is closed")
    http_header_count_limit: int = setting(100, "Most header fields a request may have; more get 431")
    http_write_timeout_secs: float = setting(
        60.0, "Seconds a client may take nothing of a response waiting to be written to it (it stopped reading "
              "and did not hang up); past it the connection is dropped and its request ends as for a client that "
              "hung up. A client that takes some bytes within each such span is never cut, however slowly it reads "
              "(0: no deadline)")
    http_connection_limit: int | None = setting(
        None, "Most open HTTP connections; a new one beyond it is answered 503 and closed, the open ones are "
              "untouched (default: half the process's open-file limit)")

    def http_limits(self) -> HttpLimits:
        return HttpLimits(header_timeout=self.http_header_timeout_secs, body_timeout=self.http_body_timeout_secs,
                          body_min_rate=self.http_body_min_bytes_per_sec, head_bytes=self.http_header_limit_kb << 10,
                          header_count=self.http_header_count_limit, write_timeout=self.http_write_timeout_secs,
                          connections=self.http_connection_limit)

    def check_http_limits(self) -> None:
        """ValueError for a limit that would refuse every request (or none, for a negative rate)."""
        for name in ("http_header_timeout_secs", "http_body_timeout_secs", "http_header_limit_kb",
                     "http_header_count_limit"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        for name in ("http_body_min_bytes_per_sec", "http_write_timeout_secs"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        if self.http_connection_limit is not None and self.http_connection_limit < 1:
            raise ValueError("--http-connection-limit must be >= 1")


@dataclass
class HttpGuard:
    """One server's limits and what they refused; shared by all its connections."""

    limits: HttpLimits = field(default_factory=HttpLimits)
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))
    # Connections answered and half-closed, waiting (briefly) for their client to read the answer.
    lingering: int = 0
    # The server's open connections (uvicorn's set); the EmbeddedHttpServer hands it over.
    connections: set = field(default_factory=set)
    # Handing off (`EmbeddedHttpServer.retire_connections`): a connection made from now on retires at once.
    retiring: bool = False

    def __post_init__(self) -> None:
        self.cap = self.limits.connection_cap()


class HttpGuardCollector:
    """`{prefix}_http_connections` (open now), `{prefix}_http_connection_limit` (the cap in effect)
    and `{prefix}_http_refusals_total{reason}` (connections answered or closed by a limit)."""

    def __init__(self, prefix: str, guard: HttpGuard) -> None:
        self.prefix, self.guard = prefix, guard

    def describe(self):
        return []

    def collect(self):
        p, guard = self.prefix, self.guard
        yield GaugeMetricFamily(f"{p}_http_connections", "Open HTTP connections", value=len(guard.connections))
        yield GaugeMetricFamily(f"{p}_http_connection_limit", "Open HTTP connections beyond which new ones get 503",
                                value=guard.cap)
        refusals = CounterMetricFamily(f"{p}_http_refusals", "HTTP connections answered and closed (or closed) "
                                       "for breaking a connection limit, by reason", labels=["reason"])
        for reason in REFUSALS:
            refusals.add_metric([reason], guard.refused[reason])
        yield refusals


_encode = msgspec.json.Encoder().encode


def error_response(status: int, message: str, code: str, type_: str = "invalid_request_error",
                   extra_headers: bytes = b"") -> bytes:
    """A complete HTTP/1.1 response with an OpenAI-shaped error body, closing the connection."""
    body = _encode({"error": {"message": message, "type": type_, "param": None, "code": code}})
    phrase = http.HTTPStatus(status).phrase.encode()
    return b"".join((b"HTTP/1.1 %d %s\r\n" % (status, phrase), b"content-type: application/json\r\n",
                     b"content-length: %d\r\nconnection: close\r\n" % len(body), extra_headers, b"\r\n", body))

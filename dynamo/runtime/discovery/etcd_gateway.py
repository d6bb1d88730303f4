"""Minimal client for etcd's JSON gRPC-gateway (etcd 3.4+), over aiohttp.

Why not grpc/protobuf: the etcd3 Python packages pin old protobuf versions and clash with
the protobuf that inference engines install; the gateway speaks plain JSON over HTTP
(bytes base64, int64 as decimal strings) and needs nothing beyond aiohttp.

Every unary call has a deadline; on a connection failure or timeout the next endpoint
is tried, and the one that answered is remembered for the next call.

Secured etcd (NVIDIA Dynamo's ETCD_AUTH_* variables, mapped in `etcd.py`): https endpoints are
verified against a given CA (else the system's), with an optional client certificate for mutual
TLS; with a user name and password the gateway asks /v3/auth/authenticate for a token and sends
it as the `Authorization` header of every call and watch. etcd forgets tokens (simple tokens
expire after --auth-token-ttl idle seconds, all vanish when etcd restarts, JWTs expire), so a
call refused for its token re-authenticates once and is retried, as etcd's own Go client does;
a watch already open keeps running on the token it was opened with.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from typing import Any, AsyncIterator

import aiohttp
import msgspec

from dynamo.runtime.tls import caller_context

log = logging.getLogger(__name__)

_json_decode = msgspec.json.Decoder().decode

UNAUTHENTICATED = 16  # grpc code of "etcdserver: invalid auth token"
# What etcd says when a token (not the password) is the problem: expired or unknown (etcd
# restarted), older than the auth store, or missing (auth enabled after we connected); the
# Go client logs in again on the same three.
_TOKEN_REFUSALS = ("invalid auth token", "revision of auth store is old", "user name is empty")


class EtcdError(Exception):
    """etcd answered with an error (e.g. code 5 "requested lease not found")."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


class EtcdAuthFailed(EtcdError):
    """etcd rejected the user name and password (retrying cannot help)."""


class EtcdUnavailable(ConnectionError):
    """No endpoint answered."""


class EtcdTlsRejected(EtcdUnavailable):
    """Endpoints answered but no TLS session could be set up (untrusted certificate, a client
    certificate demanded or refused): a configuration problem, not an outage."""


def token_refused(exc: EtcdError) -> bool:
    return exc.code == UNAUTHENTICATED or any(text in exc.message for text in _TOKEN_REFUSALS)


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_range_end(prefix: bytes) -> bytes:
    """Smallest key greater than every key starting with `prefix` (b"\\0" = no end)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def parse_endpoints(endpoints: str | list[str] | None, scheme: str = "http") -> list[str]:
    """URLs of `endpoints`; `scheme` is given to those without one (https when TLS is configured)."""
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    result = []
    for endpoint in endpoints or []:
        endpoint = endpoint.strip().rstrip("/")
        if endpoint:
            result.append(endpoint if "://" in endpoint else f"{scheme}://{endpoint}")
    return result or [f"{scheme}://localhost:2379"]


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The context https endpoints are verified with (None: aiohttp's default, the system CAs).
    Each value is a file path or, as NVIDIA Dynamo reads these variables, the PEM text itself.
    Raises TlsConfigError naming the variable when one cannot be loaded."""
    return caller_context(ca, False, cert, key, ("ETCD_AUTH_CA", "ETCD_AUTH_CLIENT_CERT", "ETCD_AUTH_CLIENT_KEY"),
                          pem_text=True)


class Gateway:
    def __init__(self, endpoints: list[str], timeout: float, *, tls: ssl.SSLContext | None = None,
                 credentials: tuple[str, str] | None = None) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._tls = tls
        self._credentials = credentials
        self._token: str | None = None  # None: not asked yet; "": etcd has auth disabled
        self._auth_lock = asyncio.Lock()
        self._current = 0
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[aiohttp.ClientResponse] = set()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._tls) if self._tls is not None else None
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        """Also aborts open watch streams, which is how watches learn the store closed."""
        for resp in list(self._streams):
            resp.close()
        if self._session is not None:
            await self._session.close()

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    # ----- authentication ----------------------------------------------------------------

    async def _current_token(self) -> str | None:
        if self._credentials is None:
            return None
        if self._token is None:
            return await self._refresh(None)
        return self._token

    async def _refresh(self, stale: str | None) -> str | None:
        """A new token unless another caller already replaced `stale` (one login per expiry)."""
        async with self._auth_lock:
            if self._token == stale:
                self._token = await self._authenticate()
            return self._token

    async def _authenticate(self) -> str:
        assert self._credentials is not None
        name, password = self._credentials
        try:
            reply = await self._post("/v3/auth/authenticate", {"name": name, "password": password}, None)
        except EtcdError as exc:
            if "authentication is not enabled" in exc.message:
                # Tolerated, as etcd's Go client does; a later "user name is empty" logs in again.
                log.warning("etcd at %s has authentication disabled; ETCD_AUTH_USERNAME is not used", self.endpoints)
                return ""
            if "authentication failed" in exc.message:
                raise EtcdAuthFailed(exc.code, exc.message) from None
            raise
        return str(reply.get("token") or "")

    def _may_refresh(self, exc: EtcdError) -> bool:
        return self._credentials is not None and not isinstance(exc, EtcdAuthFailed) and token_refused(exc)

    # ----- calls -------------------------------------------------------------------------

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        token = await self._current_token()
        try:
            return await self._post(path, body, token)
        except EtcdError as exc:
            if not self._may_refresh(exc):
                raise
        return await self._post(path, body, await self._refresh(token))

    async def _post(self, path: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
        session = self._open()
        deadline = aiohttp.ClientTimeout(total=self.timeout)
        failures: list[Exception] = []
        for index in self._order():
            try:
                async with session.post(self.endpoints[index] + path, json=body, headers=_auth_header(token),
                                        timeout=deadline) as resp:
                    raw = await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failures.append(exc)
                continue
            self._current = index
            return _check(_decode(raw, resp.status))
        raise self._unreachable(failures)

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST and yield each newline-delimited JSON message of a streamed response."""
        token = await self._current_token()
        for retried in (False, True):
            started = False
            try:
                async for message in self._stream_once(path, body, token):
                    started = True
                    yield message
                return
            except EtcdError as exc:
                # A watch refused for its token says so in its first message: log in, open it again.
                if started or retried or not self._may_refresh(exc):
                    raise
            token = await self._refresh(token)

    async def _stream_once(self, path: str, body: dict[str, Any], token: str | None) -> AsyncIterator[dict[str, Any]]:
        session = self._open()
        deadline = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout)
        failures: list[Exception] = []
        for index in self._order():
            try:
                resp = await session.post(self.endpoints[index] + path, json=body, headers=_auth_header(token),
                                          timeout=deadline)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failures.append(exc)
                continue
            self._current = index
            self._streams.add(resp)
            try:
                async for message in _lines(resp):
                    yield _check(message)
            finally:
                self._streams.discard(resp)
                resp.close()
            return
        raise self._unreachable(failures)

    def _unreachable(self, failures: list[Exception]) -> EtcdUnavailable:
        last = failures[-1] if failures else None
        if failures and all(_is_tls_failure(exc) for exc in failures):
            return EtcdTlsRejected(f"TLS with etcd at {self.endpoints} failed: {last}")
        return EtcdUnavailable(f"etcd unreachable at {self.endpoints}: {last!r}")


def _auth_header(token: str | None) -> dict[str, str] | None:
    return {"Authorization": token} if token else None


def _is_tls_failure(exc: BaseException | None) -> bool:
    for _ in range(4):  # aiohttp wraps the ssl error at most a few levels down
        if exc is None:
            return False
        if isinstance(exc, (ssl.SSLError, aiohttp.ClientSSLError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Own line splitting: aiohttp's readline caps line length, watch batches can be big."""
    buffer = b""
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield _decode(line, resp.status)
    if buffer.strip():
        yield _decode(buffer, resp.status)


def _decode(raw: bytes, status: int) -> dict[str, Any]:
    try:
        data = _json_decode(raw)
    except msgspec.DecodeError:
        raise EtcdError(-1, f"HTTP {status}: {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise EtcdError(-1, f"HTTP {status}: unexpected reply {raw[:200]!r}")
    return data


def _check(data: dict[str, Any]) -> dict[str, Any]:
    error = data.get("error")
    if error:
        if isinstance(error, dict):  # streamed errors nest {grpc_code, message}
            raise EtcdError(int(error.get("grpc_code", error.get("code", -1))), str(error.get("message")))
        raise EtcdError(int(data.get("code", -1)), str(data.get("message") or error))
    result = data.get("result")
    if isinstance(result, dict) and result.get("canceled"):
        reason = str(result.get("cancel_reason") or "")
        if reason.startswith("rpc error"):  # a watch refused (token, permission), not one compacted away
            raise EtcdError(-1, reason)
    return data

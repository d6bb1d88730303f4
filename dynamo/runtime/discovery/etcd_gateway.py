"""Minimal client for etcd's JSON gRPC-gateway (etcd 3.4+), over aiohttp.

Why not grpc/protobuf: the etcd3 Python packages pin old protobuf versions and clash with
the protobuf that inference engines install; the gateway speaks plain JSON over HTTP
(bytes base64, int64 as decimal strings) and needs nothing beyond aiohttp.

Every unary call has a deadline; on a connection failure or timeout the next endpoint
is tried, and the one that answered is remembered for the next call.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, AsyncIterator

import aiohttp
import msgspec

_json_decode = msgspec.json.Decoder().decode


class EtcdError(Exception):
    """etcd answered with an error (e.g. code 5 "requested lease not found")."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


class EtcdUnavailable(ConnectionError):
    """No endpoint answered."""


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


def parse_endpoints(endpoints: str | list[str] | None) -> list[str]:
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    result = []
    for endpoint in endpoints or []:
        endpoint = endpoint.strip().rstrip("/")
        if endpoint:
            result.append(endpoint if "://" in endpoint else f"http://{endpoint}")
    return result or ["http://localhost:2379"]


class Gateway:
    def __init__(self, endpoints: list[str], timeout: float) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._current = 0
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[aiohttp.ClientResponse] = set()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
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

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        session = self._open()
        deadline = aiohttp.ClientTimeout(total=self.timeout)
        last: Exception | None = None
        for index in self._order():
            try:
                async with session.post(self.endpoints[index] + path, json=body, timeout=deadline) as resp:
                    raw = await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = exc
                continue
            self._current = index
            return _check(_decode(raw, resp.status))
        raise EtcdUnavailable(f"etcd unreachable at {self.endpoints}: {last!r}")

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST and yield each newline-delimited JSON message of a streamed response."""
        session = self._open()
        deadline = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout)
        last: Exception | None = None
        for index in self._order():
            try:
                resp = await session.post(self.endpoints[index] + path, json=body, timeout=deadline)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = exc
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
        raise EtcdUnavailable(f"etcd unreachable at {self.endpoints}: {last!r}")


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
    return data

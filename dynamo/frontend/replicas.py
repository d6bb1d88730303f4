"""Frontend replicas answering for each other's stored objects: a stored Response (its
`previous_response_id` continuation, GET/DELETE), a Files API file and a batch live in the memory
of the replica that made them, and a load balancer sends a client's next call to any replica.

Every id a replica makes carries its tag (12 hex digits of its instance id, after the id's
prefix: `resp_<tag>...`, `file-<tag>...`, `batch_<tag>...`), and every replica registers its
HTTP address in discovery under `v1/frontends/<namespace>/<tag>` (under its lease: it leaves
with the replica). A replica asked for an id it does not hold whose tag names another live
replica forwards the whole HTTP request there and relays the answer as it comes (streams too);
the owner runs it as if the client had called it. A forwarded request carries
`x-dynamo-forwarded-from` and is never forwarded again. An owner that is gone (scaled in, killed,
restarted without `--batch-dir`) is the 404 it would be on one replica; one that is registered but
cannot be reached is a 503 (retry). A replica restarted on its `--batch-dir` registers the tags of
what it read back too. A client that leaves closes the forwarded request (the owner stops).

Not forwarded: lists (`GET /v1/files`, `GET /v1/batches` list what this replica holds), and a
replica serving HTTPS does not register (its peers would need its client certificate)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import aiohttp
import yarl
from prometheus_client import CollectorRegistry, Counter

from dynamo.frontend.errors import ApiError
from dynamo.frontend.inprocess import BACKGROUND

log = logging.getLogger(__name__)

FRONTENDS = "v1/frontends/"
TAG_DIGITS = 12
FORWARDED_FROM = b"x-dynamo-forwarded-from"
# A forwarded request that was background work here (a Batch API line continuing a Response its maker
# holds) stays background there.
BACKGROUND_HEADER = b"x-dynamo-background"
# Not relayed: hop-by-hop headers and the ones the relaying side sets itself.
_SKIP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"upgrade",
         b"proxy-connection", b"trailer", BACKGROUND_HEADER}
# No bound on a relay's length (a stream runs as long as it generates; a client that leaves ends it):
# only reaching the replica is bounded. The pool is unbounded too, so a wait for a pooled connection
# is never mistaken for a replica that is gone.
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=10, sock_read=None)
# A replica that hangs (stopped, deadlocked) still accepts connections, so nothing above ends a relay to
# it: its discovery record does, since the lease behind it lapses (ETCD_LEASE_TTL). Checked this often.
OWNER_CHECK_SECS = 2.0
OWNER_GONE_SECS = 10.0
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def adopt_background(scope: dict) -> None:
    """Mark a request a peer forwarded as background work (inprocess.BACKGROUND) when the peer ran it
    as such. Only a forwarded request's header counts; and a client could only lower its own tier."""
    headers = scope.get("headers", ())
    if any(k == BACKGROUND_HEADER for k, _ in headers) and any(k == FORWARDED_FROM for k, _ in headers):
        scope[BACKGROUND] = True


def tag_of(instance_id: int) -> str:
    return f"{instance_id & ((1 << 4 * TAG_DIGITS) - 1):0{TAG_DIGITS}x}"


def new_id(prefix: str, tag: str) -> str:
    """A fresh id for an object this replica stores: the prefix, its tag, then randomness."""
    return prefix + tag + uuid.uuid4().hex[:32 - len(tag)] if tag else prefix + uuid.uuid4().hex


def owner_tag(object_id: str, prefix: str) -> str | None:
    """The tag an id carries after `prefix`, or None for an id of another form (or with characters no id
    has: nothing but an id is ever put in a forwarded path)."""
    if not object_id.startswith(prefix) or not ID_CHARS.issuperset(object_id):
        return None
    tag = object_id[len(prefix):len(prefix) + TAG_DIGITS]
    return tag if len(tag) == TAG_DIGITS and all(c in "0123456789abcdef" for c in tag) else None


class Replicas:
    """This frontend among its replicas: its tag, its registration, and forwarding to the others."""

    def __init__(self, store, namespace: str, instance_id: int, registry: CollectorRegistry | None = None,
                 prefix: str = "dynamo_frontend") -> None:
        self.store = store
        self.namespace = namespace
        self.tag = tag_of(instance_id)
        self._session: aiohttp.ClientSession | None = None
        self.restored: set[str] = set()
        self._registered: list[str] = []  # the keys `register` put, for `leave`
        self._runtime = None
        self.forwarded = Counter(f"{prefix}_replica_forwarded_requests", "Requests forwarded to the frontend "
                                 "replica that made the stored object they name, by its kind (resp_, file-, batch_)",
                                 ("kind",), registry=registry)

    def key(self, tag: str) -> str:
        return f"{FRONTENDS}{self.namespace}/{tag}"

    async def register(self, runtime, url: str) -> None:
        """Register this replica's tag, and the tags of objects it restored from disk (`restored`: made
        by this replica before a restart, under its instance id of then)."""
        self._runtime = runtime
        for tag in sorted({self.tag, *self.restored}):
            await runtime.register_key(self.key(tag), json.dumps({"url": url}).encode())
            self._registered.append(self.key(tag))
        log.info("frontend replica %s registered at %s", self.tag, url)

    async def leave(self) -> None:
        """Out of v1/frontends/ once this replica stops listening (a drain's streams run on): its peers answer
        for its stored objects as for a replica that is gone, instead of forwarding to a closed port."""
        while self._registered:
            key = self._registered.pop()
            try:
                await self._runtime.unregister_key(key)
            except Exception as exc:  # best effort: the lease expiry removes it anyway
                log.debug("unregister %s: %s", key, exc)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(self, object_id: str, prefix: str, scope: dict, body: bytes, send, receive=None) -> bool:
        """Relay the request to the replica that made `object_id`; False (nothing sent) when it is
        this one, none, gone, or the request was itself forwarded. With `receive`, a client that goes
        away mid-relay closes the forwarded request too (its maker stops generating)."""
        tag = owner_tag(object_id, prefix)
        if tag is None or tag == self.tag or any(k == FORWARDED_FROM for k, _ in scope["headers"]):
            return False
        url = await self._url(tag)
        if url is None:
            return False
        log.debug("forwarding %s %s to replica %s", scope["method"], object_id, tag)
        started: list[bool] = []  # [is it an event stream] once the answer has begun

        async def relayed(message: dict) -> None:
            if not started:
                started.append(any(k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                                   for k, v in message.get("headers", ())))
            await send(message)
        relay = asyncio.ensure_future(self._relay(url, scope, body, relayed))
        owner_gone = asyncio.ensure_future(self._until_unregistered(tag))
        client_gone = asyncio.ensure_future(_client_left(receive)) if receive is not None else None
        try:
            await asyncio.wait({t for t in (relay, owner_gone, client_gone) if t is not None},
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, owner_gone, client_gone):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(*(t for t in (relay, owner_gone, client_gone) if t is not None),
                                 return_exceptions=True)
        if relay.done() and not relay.cancelled():
            if not relay.result():  # raises the relay's ApiError (a 503)
                return False
        elif owner_gone.done() and not owner_gone.cancelled():
            # Hung (its lease lapsed while it held the request) or dead: a clear 503, not a wait that
            # lasts as long as the client's patience; a stream already begun ends with that error event.
            error = unreachable(url, ConnectionError("it stopped renewing its registration (hung or dead)"))
            if not started:
                raise error
            # (a blank line first closes an event the relay may have cut mid-way)
            tail = b"\n\ndata: " + json.dumps(error.body()).encode() + b"\n\n" if started[0] else b""
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        self.forwarded.labels(prefix).inc()
        return True

    async def _until_unregistered(self, tag: str) -> None:
        """Return once the replica's discovery record has been gone for OWNER_GONE_SECS (its lease expired:
        it died or hangs; a record missing for a moment, as when etcd returns empty and owners re-put, is
        not that); discovery itself being unreachable is no sign either way, so the wait goes on."""
        loop = asyncio.get_running_loop()
        missing_since = None
        while True:
            await asyncio.sleep(OWNER_CHECK_SECS)
            try:
                present = await self.store.get(self.key(tag)) is not None
            except Exception:  # discovery down: keep relaying, as routing does
                continue
            missing_since = None if present else (missing_since or loop.time())
            if missing_since is not None and loop.time() - missing_since >= OWNER_GONE_SECS:
                return

    async def _url(self, tag: str) -> str | None:
        try:
            raw = await self.store.get(self.key(tag))
            return json.loads(raw)["url"] if raw else None
        except Exception as exc:  # discovery down, a malformed record: as if the owner were gone
            log.warning("frontend replica %s not found: %s", tag, exc)
            return None

    async def _relay(self, url: str, scope: dict, body: bytes, send) -> bool:
        """Relay the request and its answer; False (nothing sent) when the replica refuses connections (it
        died and its record has not expired yet), a 503 when it cannot be reached otherwise. Past the
        answer's start, a replica that drops the stream ends the client's where it was."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=FORWARD_TIMEOUT, auto_decompress=False,
                                                  connector=aiohttp.TCPConnector(limit=0))
        query = scope.get("query_string", b"")
        path = scope.get("raw_path") or scope["path"].encode()
        target = yarl.URL(url + path.decode("latin-1") + ("?" + query.decode("latin-1") if query else ""),
                          encoded=True)
        headers: list[tuple[str, str]] = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                                          if k.lower() not in _SKIP]
        headers.append((FORWARDED_FROM.decode(), self.tag))
        if scope.get(BACKGROUND):
            headers.append((BACKGROUND_HEADER.decode(), "1"))
        try:
            resp = await self._session.request(scope["method"], target, data=body, headers=headers)
        except aiohttp.ClientConnectorError as exc:
            # Refused, or reset as it connected (its listening socket closed under the connection): it is gone.
            if isinstance(exc.os_error, (ConnectionRefusedError, ConnectionResetError)):
                log.warning("frontend replica at %s is gone: %s", url, exc)
                return False
            raise unreachable(url, exc) from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise unreachable(url, exc) from None
        async with resp:
            await send({"type": "http.response.start", "status": resp.status,
                        "headers": _relayed_headers(resp.raw_headers)})
            try:
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("frontend replica at %s dropped a relayed answer: %s", url, exc)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True


def unreachable(url: str, exc: BaseException) -> ApiError:
    return ApiError(503, f"The frontend replica holding this object ({url}) cannot be reached: "
                    f"{str(exc) or type(exc).__name__}; retry", "service_unavailable", None, "replica_unreachable")


async def _client_left(receive) -> None:
    """Return once the client has disconnected (the request's body was read: what comes is the end)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _relayed_headers(raw: Any) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in raw if k.lower() not in _SKIP]

"""Discovery on a real etcd (3.4+) through its JSON gRPC-gateway (see `etcd_gateway`:
aiohttp only, no grpc/protobuf, which avoids the protobuf conflicts users hit with the
etcd3 packages).

Endpoints: `endpoints` option, else ETCD_ENDPOINTS (comma-separated), else
`http://localhost:2379`; the next one is tried when one fails.

Secured etcd, with NVIDIA Dynamo's variables: ETCD_AUTH_USERNAME + ETCD_AUTH_PASSWORD (a token
on every call, renewed when etcd drops it), ETCD_AUTH_CA (https endpoints verified against it)
and ETCD_AUTH_CLIENT_CERT + ETCD_AUTH_CLIENT_KEY (mutual TLS). Unlike Dynamo, which uses the
password or the certificates, both apply together, and the CA alone is enough for TLS. A
start-up that etcd refuses (wrong password, untrusted certificate, auth required but no user)
fails with one DiscoveryUnavailable line naming the variables to fix; no retry can help it.

Lease: granted with TTL = ceil(ttl) s and renewed every ttl/3. When a renewal finds the
lease gone (expired during a stall, revoked, etcd restarted with fresh data) the store
grants a lease again, asking for the *same* id so the instance id stays stable, falls
back to a fresh id (and calls `on_lease_change`) if that is refused, and re-puts every
leased key it wrote. NVIDIA Dynamo never recovers from lease loss; this does.

Watch: range at a revision, then watch from revision + 1 (no gap). If the stream breaks
(etcd restart, compaction), it re-lists and emits the difference from what it had
reported, then watches again; a key missing from such a re-list is reported deleted only
if its owner has not re-put it within one TTL (see `resync`), so an etcd that returns with
its data lost does not make live workers vanish. Watch streams carry no read deadline
(they are quiet when nothing changes); a dead peer is noticed through the keep-alive loop
and TCP.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import AsyncIterator

from dynamo.runtime.discovery.base import (
    DEFAULT_TTL,
    DiscoveryUnavailable,
    KeyValueStore,
    WatchEvent,
    wait_closed_or,
)
from dynamo.runtime.discovery.etcd_gateway import (
    EtcdAuthFailed,
    EtcdError,
    EtcdTlsRejected,
    EtcdUnavailable,
    Gateway,
    b64,
    parse_endpoints,
    prefix_range_end,
    tls_context,
    token_refused,
    unb64,
)
from dynamo.runtime.discovery.resync import ResyncView
from dynamo.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

LEASE_NOT_FOUND = 5  # grpc NOT_FOUND, as returned for an unknown lease
RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 4.0
OUTAGE_PROBE_S = 1.0  # keep-alive interval while etcd is unreachable (capped at ttl/3)
WATCH_BUFFER = 256  # stream events read ahead of a slow watch consumer
_STREAM_END = object()


class EtcdStore(KeyValueStore):
    backend = "etcd"

    def __init__(
        self, *, ttl: float = DEFAULT_TTL, endpoints: str | list[str] | None = None, timeout: float = 5.0,
        connect_timeout: float | None = None, settings: RuntimeSettings | None = None,
    ) -> None:
        super().__init__(ttl=ttl)
        settings = settings or RuntimeSettings.from_env()
        tls = tls_context(settings.etcd_auth_ca, settings.etcd_auth_client_cert, settings.etcd_auth_client_key)
        self.endpoints = parse_endpoints(endpoints or settings.etcd_urls(), "https" if tls else "http")
        if tls and any(url.startswith("http://") for url in self.endpoints):
            log.warning("ETCD_AUTH_CA / ETCD_AUTH_CLIENT_CERT are set but etcd endpoints %s are http://: TLS applies "
                        "to https:// endpoints only", self.endpoints)
        self._username = settings.etcd_auth_username
        # How long start() keeps trying an unreachable etcd: 0 (default) fails at once; a process
        # started during an outage with a wait configured registers when etcd returns.
        if connect_timeout is None:
            connect_timeout = settings.etcd_connect_timeout_secs
        self.connect_timeout = connect_timeout
        self._gw = Gateway(self.endpoints, timeout, tls=tls, credentials=_credentials(settings))
        self._recover_lock = asyncio.Lock()

    # ----- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        try:
            self._lease_id = await self._first_grant()
            if not self._username:
                # etcd grants leases to anyone: a read says now, not at the first put, that it wants a user.
                await self._gw.call("/v3/kv/range", {"key": b64("v1/"), "count_only": True})
        except (EtcdError, EtcdTlsRejected) as exc:  # etcd answered and refused: say what to set
            await self._gw.close()
            raise DiscoveryUnavailable(self._refusal(exc)) from None
        except BaseException:
            await self._gw.close()
            raise
        self._started = True
        self._spawn(self._keep_alive(), "keepalive")

    async def close(self) -> None:
        """Revoke the lease so our keys vanish at once; best effort if etcd is gone."""
        if self._closed:
            return
        self._mark_closed()
        await self._cancel_tasks()
        if self._lease_id:
            try:
                await self._gw.call("/v3/lease/revoke", {"ID": str(self._lease_id)})
            except (EtcdError, EtcdUnavailable) as exc:
                log.debug("etcd lease revoke failed (keys expire with the TTL): %s", exc)
        await self._gw.close()

    def _refusal(self, exc: Exception) -> str:
        where = ",".join(self.endpoints)
        if isinstance(exc, EtcdAuthFailed):
            return (f"discovery: etcd at {where} rejected ETCD_AUTH_USERNAME={self._username!r} with the given "
                    f"ETCD_AUTH_PASSWORD ({exc.message})")
        if isinstance(exc, EtcdTlsRejected):
            return (f"discovery: {exc}; set ETCD_AUTH_CA to the CA that signed etcd's certificate, and "
                    "ETCD_AUTH_CLIENT_CERT / ETCD_AUTH_CLIENT_KEY when etcd demands a client certificate")
        if isinstance(exc, EtcdError) and token_refused(exc) and not self._username:
            return f"discovery: etcd at {where} requires authentication: set ETCD_AUTH_USERNAME and ETCD_AUTH_PASSWORD"
        return f"discovery: etcd at {where} refused start-up: {exc}"

    async def _first_grant(self) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        delay = RETRY_DELAY
        while True:
            try:
                return await self._grant()
            except EtcdUnavailable as exc:
                if isinstance(exc, EtcdTlsRejected) or loop.time() + delay > deadline:
                    raise  # a TLS refusal is configuration, not an outage to wait out
                log.warning("etcd at %s unreachable (%s); retrying for up to %.0f s more", self.endpoints, exc,
                            deadline - loop.time())
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)

    async def _grant(self, lease_id: int = 0) -> int:
        body: dict = {"TTL": max(1, math.ceil(self.ttl))}
        if lease_id:
            body["ID"] = str(lease_id)
        return int((await self._gw.call("/v3/lease/grant", body))["ID"])

    async def _keep_alive(self) -> None:
        outage = False
        while True:
            # Probe often during an outage: when etcd returns without our lease (data lost), the
            # sooner we re-put our keys, the sooner watchers stop holding their deletes.
            await asyncio.sleep(min(self.ttl / 3, OUTAGE_PROBE_S) if outage else self.ttl / 3)
            try:
                reply = await self._gw.call("/v3/lease/keepalive", {"ID": str(self._lease_id)})
                if outage:
                    log.warning("etcd reachable again at %s", self.endpoints)
                    outage = False
                if int(reply.get("result", {}).get("TTL", 0)) <= 0:
                    await self._recover()
            except (EtcdError, EtcdUnavailable) as exc:
                if not outage:
                    log.warning("etcd lease %x keep-alive failed: %s", self._lease_id, exc)
                outage = True

    async def _recover(self) -> None:
        """Lease is gone: take one again (same id if etcd allows) and re-put our keys."""
        async with self._recover_lock:
            old = self._lease_id
            try:
                new = await self._grant(old)
            except EtcdError as exc:
                log.warning("etcd refused lease id %x again (%s); granting a new one", old, exc)
                new = await self._grant()
            self._lease_id = new
            log.warning("etcd lease %x was lost; now %x, re-registering %d keys", old, new, len(self._leased))
            for key, value in list(self._leased.items()):
                await self._put_raw(key, value, True)
        if new != old:
            self._fire_lease_change(old, new)

    # ----- data ------------------------------------------------------------------------

    async def _put_raw(self, key: str, value: bytes, leased: bool) -> None:
        body = {"key": b64(key), "value": b64(value)}
        if leased:
            body["lease"] = str(self._lease_id)
        await self._gw.call("/v3/kv/put", body)

    async def put(self, key: str, value: bytes, *, leased: bool = True) -> None:
        self._check_open()
        value = bytes(value)
        try:
            await self._put_raw(key, value, leased)
        except EtcdError as exc:
            if not leased or exc.code != LEASE_NOT_FOUND:
                raise
            self._remember(key, value, leased)
            await self._recover()  # re-puts this key too
            return
        self._remember(key, value, leased)

    async def delete(self, key: str) -> None:
        self._check_open()
        self._leased.pop(key, None)
        await self._gw.call("/v3/kv/deleterange", {"key": b64(key)})

    async def get(self, key: str) -> bytes | None:
        self._check_open()
        kvs = (await self._gw.call("/v3/kv/range", {"key": b64(key)})).get("kvs") or []
        return unb64(kvs[0].get("value", "")) if kvs else None

    async def get_prefix(self, prefix: str) -> dict[str, bytes]:
        self._check_open()
        return (await self._range_prefix(prefix))[0]

    async def _range_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """All keys under prefix and the revision they were read at."""
        raw = prefix.encode() or b"\0"
        body = {"key": b64(raw), "range_end": b64(prefix_range_end(prefix.encode()))}
        reply = await self._gw.call("/v3/kv/range", body)
        items = {unb64(kv["key"]).decode(): unb64(kv.get("value", "")) for kv in reply.get("kvs") or []}
        return items, int(reply["header"]["revision"])

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:  # type: ignore[override]
        self._check_open()
        closed = self._closed_signal()
        loop = asyncio.get_running_loop()
        # Deletes found by a re-list wait one TTL (our own; owners use the same default): the
        # time an owner takes to notice a lease lost with etcd's data and re-put its keys.
        view = ResyncView(grace=self.ttl)
        failures = 0
        while not self._closed:
            try:
                snapshot, revision = await self._range_prefix(prefix)
                failures = 0
                for event in self._resync(prefix, view, snapshot, loop.time()):
                    yield event
                async for event in self._follow(prefix, revision + 1, view, closed):
                    yield event
            except (EtcdError, EtcdUnavailable, OSError, asyncio.TimeoutError) as exc:
                if self._closed:
                    return
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "etcd watch on %r broke (%s); will re-list", prefix, exc)
            delay = min(RETRY_DELAY * 2 ** max(failures - 1, 0), MAX_RETRY_DELAY)
            stopped, _ = await wait_closed_or(closed, asyncio.sleep(delay))
            if stopped:
                return

    def _resync(self, prefix: str, view: ResyncView, snapshot: dict[str, bytes], now: float) -> list[WatchEvent]:
        events = view.resync(snapshot, now)
        if view.held:
            log.info("etcd watch on %r re-listed: %d key(s) missing (etcd restarted empty?); each is reported "
                     "deleted only if its owner has not re-put it within %.0f s", prefix, len(view.held), view.grace)
        return events

    async def _follow(self, prefix: str, revision: int, view: ResyncView,
                      closed: asyncio.Event) -> AsyncIterator[WatchEvent]:
        """One watch stream's events, and held deletes as they fall due, until the stream
        ends (returns) or breaks (raises). Held deletes are only reported while a stream is
        live: during an outage nobody can re-put, so nothing is concluded from absence."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=WATCH_BUFFER)
        pump = self._spawn(self._pump(prefix, revision, queue), "watch-stream")
        try:
            while True:
                stopped, item = await wait_closed_or(closed, _next_item(queue, view.next_deadline(), loop))
                if stopped:
                    return
                due = view.due(loop.time())
                if due:
                    log.info("etcd watch on %r: %d key(s) not re-put within %.0f s; reported deleted", prefix,
                             len(due), view.grace)
                for event in due:
                    yield event
                if item is _STREAM_END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if item is not None and (event := view.apply(item)) is not None:
                    yield event
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def _pump(self, prefix: str, revision: int, queue: asyncio.Queue) -> None:
        """Reads one watch stream into `queue`, so that waiting on it can have a deadline
        (a held delete falling due) without cancelling the stream."""
        try:
            async for event in self._watch_from(prefix, revision):
                await queue.put(event)
            end: object = _STREAM_END
        except Exception as exc:
            end = exc
        await queue.put(end)

    async def _watch_from(self, prefix: str, revision: int) -> AsyncIterator[WatchEvent]:
        """Events of one watch stream; returns when etcd cancels it (e.g. compaction)."""
        request = {
            "key": b64(prefix.encode() or b"\0"),
            "range_end": b64(prefix_range_end(prefix.encode())),
            "start_revision": str(revision),
        }
        try:
            async for message in self._gw.stream("/v3/watch", {"create_request": request}):
                result = message.get("result", {})
                if result.get("created"):
                    _check_history(result, revision)
                for raw in result.get("events") or []:
                    yield _to_event(raw)
                if result.get("canceled"):
                    log.info("etcd watch on %r canceled: %s", prefix, result.get("cancel_reason", "compacted"))
                    return
        except Exception as exc:  # aiohttp errors when the session closes under us
            if self._closed:
                return
            if isinstance(exc, (EtcdError, EtcdUnavailable)):
                raise
            raise EtcdUnavailable(f"watch stream failed: {exc!r}") from exc


def _credentials(settings: RuntimeSettings) -> tuple[str, str] | None:
    user, password = settings.etcd_auth_username, settings.etcd_auth_password
    if bool(user) != bool(password):  # Dynamo would quietly go unauthenticated; say it instead
        raise DiscoveryUnavailable("discovery: ETCD_AUTH_USERNAME and ETCD_AUTH_PASSWORD go together")
    return (user, password) if user and password else None


def _check_history(created: dict, revision: int) -> None:
    """A watch opened from a revision etcd has not reached means etcd lost its data between
    our range and this watch: it would miss every change until its revision caught up."""
    current = int(created.get("header", {}).get("revision", revision - 1))
    if current < revision - 1:
        raise EtcdUnavailable(f"etcd is at revision {current}, before the {revision - 1} we listed: data lost")


def _to_event(raw: dict) -> WatchEvent:
    kv = raw.get("kv", {})
    key = unb64(kv.get("key", "")).decode()
    if raw.get("type") == "DELETE":
        return WatchEvent("delete", key)
    return WatchEvent("put", key, unb64(kv.get("value", "")))


async def _next_item(queue: asyncio.Queue, deadline: float | None, loop: asyncio.AbstractEventLoop) -> object:
    """The next stream item, or None when `deadline` (the next held delete) comes first."""
    timeout = None if deadline is None else max(0.0, deadline - loop.time())
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except asyncio.TimeoutError:
        return None

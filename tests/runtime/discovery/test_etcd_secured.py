"""EtcdStore against a real secured etcd, configured with NVIDIA Dynamo's ETCD_AUTH_* variables:
https with mutual TLS (files, or PEM text as Dynamo reads them), password auth with simple tokens
that expire within seconds and vanish when etcd restarts, and the start-ups etcd refuses (no CA,
no client certificate, no or a wrong password) failing at once with one line naming the variable."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest

from dynamo.runtime.discovery.base import FIRST_CONTACT_S, DiscoveryUnavailable, WatchEvent, start_store
from dynamo.runtime.discovery.etcd import EtcdStore
from dynamo.runtime.discovery.etcd_gateway import EtcdUnavailable, Gateway, b64, prefix_range_end
from dynamo.runtime.net import free_port
from dynamo.runtime.settings import RuntimeSettings
from tests.fixtures.pki import make_pki
from tests.fixtures.procs import one_error_exit
from tests.fixtures.secure_etcd import SecureEtcd

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]
DEADLINE = 20.0  # generous: assert behaviour, not timings, on a loaded 2-core box
TOKEN_TTL = 2  # etcd's --auth-token-ttl: a token idle this long is forgotten
USER, PASSWORD = "dynamo", "s3cret-pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_etcd(pki, tmp_path_factory) -> Iterator[SecureEtcd]:
    """https only, demanding a client certificate signed by the test CA."""
    server = SecureEtcd(str(tmp_path_factory.mktemp("tls-etcd")), pki, client_cert_auth=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory) -> Iterator[SecureEtcd]:
    """Plain http with auth enabled and short-lived tokens."""
    server = SecureEtcd(str(tmp_path_factory.mktemp("auth-etcd")), token_ttl=TOKEN_TTL)
    server.start()
    server.enable_auth({USER: PASSWORD})
    yield server
    server.stop()


def settings(**auth: str) -> RuntimeSettings:
    return RuntimeSettings.from_env({f"ETCD_AUTH_{name.upper()}": value for name, value in auth.items()})


def mtls(pki: dict[str, str]) -> dict[str, str]:
    return {"ca": pki["ca"], "client_cert": pki["client_cert"], "client_key": pki["client_key"]}


@pytest.fixture
async def stores() -> AsyncIterator[Callable]:
    """Factory of stores started the way a process starts them (start_store), all closed at teardown."""
    made: list[EtcdStore] = []

    async def factory(endpoints: str, auth: dict[str, str], ttl: float = 5.0) -> EtcdStore:
        store = EtcdStore(ttl=ttl, endpoints=endpoints, timeout=5.0, settings=settings(**auth))
        made.append(store)
        await start_store(store)
        return store

    yield factory
    for store in made:
        await store.close()


def unique_prefix() -> str:
    return f"v1/secured/{uuid.uuid4().hex[:8]}/"


async def next_event(watch: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(watch.__anext__(), DEADLINE)


async def refused_start(store_factory: Callable, endpoints: str, auth: dict[str, str]) -> str:
    """The one-line message of a start-up etcd refuses, which must come at once (no retry loop)."""
    began = time.monotonic()
    with pytest.raises(DiscoveryUnavailable) as refused:
        await store_factory(endpoints, auth)
    assert time.monotonic() - began < FIRST_CONTACT_S, "a refusal must not wait out the first-contact deadline"
    message = str(refused.value)
    assert "\n" not in message and "Traceback" not in message
    return message


async def reachable_again(store: EtcdStore, key: str) -> None:
    """Until a read succeeds: the first call after a restart may meet a pooled connection etcd
    closed (a plain outage error, not what these tests are about)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            await store.get(key)
            return
        except EtcdUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def assert_put_get_watch(owner: EtcdStore, watcher: EtcdStore) -> None:
    p = unique_prefix()
    watch = watcher.watch_prefix(p)
    await owner.put(p + "one", b"1")
    assert await next_event(watch) == WatchEvent("put", p + "one", b"1")
    await owner.put(p + "two", b"2")  # after the listing: through the watch stream
    assert await next_event(watch) == WatchEvent("put", p + "two", b"2")
    assert await watcher.get_prefix(p) == {p + "one": b"1", p + "two": b"2"}
    assert await watcher.get(p + "two") == b"2"
    await watch.aclose()


# ----- TLS ---------------------------------------------------------------------------------------


async def test_mutual_tls_puts_gets_and_watches(tls_etcd, pki, stores):
    owner = await stores(tls_etcd.url, mtls(pki))
    # Scheme-less, as ETCD_ENDPOINTS often is: with TLS configured it means https.
    watcher = await stores(tls_etcd.url.removeprefix("https://"), mtls(pki))
    assert watcher.endpoints == [tls_etcd.url]
    await assert_put_get_watch(owner, watcher)


async def test_pem_text_in_the_variables_works_as_dynamo_reads_them(tls_etcd, pki, stores):
    pem = {name: Path(path).read_text() for name, path in mtls(pki).items()}
    store = await stores(tls_etcd.url, pem)
    key = unique_prefix() + "k"
    await store.put(key, b"v")
    assert await store.get(key) == b"v"


async def test_without_the_ca_start_up_fails_naming_etcd_auth_ca(tls_etcd, pki, stores):
    # No CA: verified against the system's CAs, which never signed the test CA's certificate.
    message = await refused_start(stores, tls_etcd.url, {"client_cert": pki["client_cert"],
                                                         "client_key": pki["client_key"]})
    assert "certificate verify failed" in message and "set ETCD_AUTH_CA" in message, message
    message = await refused_start(stores, tls_etcd.url, {**mtls(pki), "ca": pki["stranger"]})
    assert "certificate verify failed" in message, message


async def test_without_a_client_certificate_start_up_fails_naming_it(tls_etcd, pki, stores):
    message = await refused_start(stores, tls_etcd.url, {"ca": pki["ca"]})
    assert "ETCD_AUTH_CLIENT_CERT" in message and "certificate" in message.split(";")[0], message


async def test_plain_http_to_a_tls_etcd_never_falls_back(tls_etcd, pki, stores):
    with pytest.raises(DiscoveryUnavailable):
        await stores(tls_etcd.url.replace("https://", "http://"), {})


# ----- password auth -----------------------------------------------------------------------------


async def test_password_auth_puts_lists_and_watches(auth_etcd, stores):
    owner = await stores(auth_etcd.url, {"username": USER, "password": PASSWORD})
    watcher = await stores(auth_etcd.url, {"username": USER, "password": PASSWORD})
    await assert_put_get_watch(owner, watcher)
    key = unique_prefix() + "seen-by-root"
    await owner.put(key, b"x")
    assert auth_etcd.get(key) == b"x"


async def test_a_wrong_password_fails_start_up_naming_etcd_auth_username(auth_etcd, stores):
    message = await refused_start(stores, auth_etcd.url, {"username": USER, "password": "not-it"})
    assert f"ETCD_AUTH_USERNAME='{USER}'" in message and "authentication failed" in message, message
    assert "not-it" not in message


async def test_no_credentials_for_an_auth_etcd_says_which_to_set(auth_etcd, stores):
    message = await refused_start(stores, auth_etcd.url, {})
    assert "requires authentication: set ETCD_AUTH_USERNAME and ETCD_AUTH_PASSWORD" in message, message


async def test_an_expired_token_is_renewed_transparently(auth_etcd, stores):
    # A long lease TTL keeps the keep-alive quiet, so the token goes idle and etcd forgets it.
    store = await stores(auth_etcd.url, {"username": USER, "password": PASSWORD}, ttl=60.0)
    key = unique_prefix() + "k"
    await store.put(key, b"before")
    old = store._gw._token
    await asyncio.sleep(TOKEN_TTL * 2 + 1)
    refused = auth_etcd.request("/v3/kv/range", {"key": b64(key)}, token=old)
    assert "invalid auth token" in str(refused.get("error")), refused  # etcd really forgot it
    await store.put(key, b"after")
    assert await store.get(key) == b"after" and auth_etcd.get(key) == b"after"
    assert store._gw._token not in (None, "", old)


async def test_a_watch_opened_with_an_expired_token_logs_in_again(auth_etcd):
    """etcd refuses such a watch in its first message (canceled, "invalid auth token"), not with an
    HTTP error: the gateway must log in and open it again, not report a quiet cancel."""
    gateway = Gateway([auth_etcd.url], 5.0, credentials=(USER, PASSWORD))
    prefix = unique_prefix().encode()
    try:
        await gateway.call("/v3/kv/range", {"key": b64(prefix)})  # logs in
        await asyncio.sleep(TOKEN_TTL * 2 + 1)
        request = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_range_end(prefix))}}
        stream = gateway.stream("/v3/watch", request)
        created = await asyncio.wait_for(stream.__anext__(), DEADLINE)
        assert created["result"].get("created") and not created["result"].get("canceled"), created
        auth_etcd.request("/v3/kv/put", {"key": b64(prefix + b"k"), "value": b64("v")})
        event = await asyncio.wait_for(stream.__anext__(), DEADLINE)
        assert event["result"]["events"][0]["kv"]["value"] == b64("v")
        await stream.aclose()
    finally:
        await gateway.close()


@pytest.fixture
def restartable_etcd(tmp_path) -> Iterator[SecureEtcd]:
    """Its own auth etcd, to restart (request it before `stores`: the stores close first)."""
    server = SecureEtcd(str(tmp_path))
    server.start()
    server.enable_auth({USER: PASSWORD})
    yield server
    server.stop()


async def test_lease_recovery_and_relisting_survive_an_auth_etcd_restart(restartable_etcd, stores):
    """A restart forgets every token: the keep-alive, the re-listing watch and a revoked lease's
    recovery all log in again on their own."""
    server, auth = restartable_etcd, {"username": USER, "password": PASSWORD}
    owner, watcher = await stores(server.url, auth, ttl=2.0), await stores(server.url, auth)
    key = unique_prefix() + "instance"
    await owner.put(key, b"me")
    watch = watcher.watch_prefix(key)
    assert await next_event(watch) == WatchEvent("put", key, b"me")
    server.stop()
    server.start()
    await reachable_again(owner, key)
    await owner.put(key, b"again")  # the new watch stream (after re-listing) is live
    assert await next_event(watch) == WatchEvent("put", key, b"again")
    reply = server.request("/v3/lease/revoke", {"ID": str(owner.lease_id)})  # behind the owner's back
    assert "error" not in reply, reply
    assert await next_event(watch) == WatchEvent("delete", key)
    assert await next_event(watch) == WatchEvent("put", key, b"again")  # re-registered
    await watch.aclose()


def test_a_process_with_a_wrong_password_exits_with_one_line(auth_etcd):
    env = {**os.environ, "ETCD_ENDPOINTS": auth_etcd.url, "DYN_DISCOVERY_BACKEND": "etcd",
           "ETCD_AUTH_USERNAME": USER, "ETCD_AUTH_PASSWORD": "not-it"}
    proc = subprocess.Popen([sys.executable, "-m", "dynamo.frontend", "--http-port", str(free_port())], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out, error = one_error_exit(proc)
    assert f"ETCD_AUTH_USERNAME='{USER}'" in error, out
    assert "not-it" not in out  # the password is never printed

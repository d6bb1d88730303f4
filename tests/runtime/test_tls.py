"""TLS on the request plane (`DYN_TCP_TLS_*`): a real server and client on loopback with a throwaway
CA (trustme). Streams flow over TLS; a worker whose certificate the caller cannot verify, a caller
without the client certificate mutual TLS demands, and a plaintext caller of a TLS worker all fail
to connect rather than fall back to plaintext; bad settings are start-up errors naming their variable."""

from __future__ import annotations

import msgspec
import pytest

from dynamo.runtime.rp_client import CannotConnect, Disconnected, RequestPlaneClient, StreamError
from dynamo.runtime.rp_server import RequestPlaneServer
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.tls import ClientTls, ServerTls, TlsConfigError
from tests.fixtures.pki import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def settings(**env) -> RuntimeSettings:
    return RuntimeSettings.from_env({f"DYN_TCP_TLS_{k.upper()}": str(v) for k, v in env.items()})


async def _serve(server_settings: RuntimeSettings) -> RequestPlaneServer:
    server = RequestPlaneServer("127.0.0.1", 0, ServerTls.of(server_settings))

    async def handler(payload, ctx):
        yield {"echo": msgspec.msgpack.decode(payload)}

    server.add_handler("generate", handler)
    await server.start()
    return server


async def _call(server: RequestPlaneServer, client_settings: RuntimeSettings, timeout: float = 1.0) -> list:
    client = RequestPlaneClient(timeout, ClientTls.of(client_settings))
    try:
        stream = await client.open_stream(server.address, "generate", msgspec.msgpack.encode("hi"))
        return [msgspec.msgpack.decode(item) async for item in stream]
    finally:
        await client.close()


async def test_streams_flow_over_tls_verified_against_the_ca(pki):
    server = await _serve(settings(cert_path=pki["cert"], key_path=pki["key"]))
    try:
        assert await _call(server, settings(ca_cert_path=pki["ca"])) == [{"echo": "hi"}]
        # the name checked can be set when workers are reached by an address their certificate lacks
        assert await _call(server, settings(ca_cert_path=pki["ca"], server_name="worker.dynamo.svc")) == \
            [{"echo": "hi"}]
        with pytest.raises(CannotConnect, match="CERTIFICATE_VERIFY_FAILED"):
            await _call(server, settings(ca_cert_path=pki["ca"], server_name="elsewhere.example"))
        with pytest.raises(CannotConnect, match="CERTIFICATE_VERIFY_FAILED"):
            await _call(server, settings(ca_cert_path=pki["stranger"]))
        assert await _call(server, settings(insecure="true")) == [{"echo": "hi"}]  # development only
        with pytest.raises((Disconnected, StreamError, CannotConnect)):  # plaintext is no fallback
            await _call(server, settings())
    finally:
        await server.close(linger=0)


async def test_mutual_tls_demands_the_callers_certificate(pki):
    server = await _serve(settings(cert_path=pki["cert"], key_path=pki["key"], client_ca_cert_path=pki["ca"]))
    try:
        mutual = settings(ca_cert_path=pki["ca"], client_cert_path=pki["client_cert"],
                          client_key_path=pki["client_key"])
        assert await _call(server, mutual) == [{"echo": "hi"}]
        with pytest.raises((Disconnected, StreamError, CannotConnect)):
            await _call(server, settings(ca_cert_path=pki["ca"]))
    finally:
        await server.close(linger=0)


async def test_a_tls_caller_cannot_reach_a_plaintext_worker(pki):
    server = await _serve(settings())
    try:
        with pytest.raises(CannotConnect, match="TLS handshake did not complete: does the worker serve TLS too"):
            await _call(server, settings(ca_cert_path=pki["ca"], handshake_timeout_secs="1"))
    finally:
        await server.close(linger=0)


@pytest.mark.parametrize("env, names", [
    ({"cert_path": "CERT"}, "DYN_TCP_TLS_KEY_PATH"),
    ({"client_ca_cert_path": "CA"}, "DYN_TCP_TLS_CERT_PATH"),
    ({"cert_path": "/no/such.pem", "key_path": "/no/such.key"}, "DYN_TCP_TLS_CERT_PATH"),
])
def test_bad_server_settings_are_errors_naming_the_variable(pki, env, names):
    env = {k: pki["cert"] if v == "CERT" else pki["ca"] if v == "CA" else v for k, v in env.items()}
    with pytest.raises(TlsConfigError, match=names):
        ServerTls.of(settings(**env))


def test_bad_client_settings_are_errors_naming_the_variable(pki):
    with pytest.raises(TlsConfigError, match="DYN_TCP_TLS_CLIENT_KEY_PATH"):
        ClientTls.of(settings(ca_cert_path=pki["ca"], client_cert_path=pki["client_cert"]))
    with pytest.raises(TlsConfigError, match="DYN_TCP_TLS_CA_CERT_PATH"):
        ClientTls.of(settings(ca_cert_path="/no/such/ca.pem"))
    assert ClientTls.of(settings()) is None and ServerTls.of(settings()) is None

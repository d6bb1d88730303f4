"""The TCP KV transport under the request plane's TLS settings (`DYN_TCP_TLS_*`): a pull over TLS
delivers the bytes verified against the CA; mutual TLS refuses a puller without a certificate; a
plaintext puller of a TLS sender, a TLS puller of a plaintext one, and a puller trusting another CA
all fail (the decode worker then recomputes) rather than move KV in the clear."""

from __future__ import annotations

import os

import pytest

from dynamo.kv_transfer import KvSender, TransferError, pull
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.tls import ClientTls, ServerTls
from tests.fixtures.pki import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("kv-pki"))


def tls(**env):
    settings = RuntimeSettings.from_env({f"DYN_TCP_TLS_{k.upper()}": str(v) for k, v in env.items()})
    return ServerTls.of(settings), ClientTls.of(settings)


def sender(server_tls) -> KvSender:
    return KvSender(chunk_bytes=4096, cap_bytes=1 << 22, ttl_s=30, tls=server_tls).start()


def test_a_pull_over_mutual_tls_delivers_the_bytes(pki):
    server_tls, _ = tls(cert_path=pki["cert"], key_path=pki["key"], client_ca_cert_path=pki["ca"])
    _, client_tls = tls(ca_cert_path=pki["ca"], client_cert_path=pki["client_cert"],
                        client_key_path=pki["client_key"])
    s = sender(server_tls)
    try:
        payload = [os.urandom(100_000), os.urandom(5)]
        assert s.stage("r1", payload, {"num_blocks": 2})
        got = pull("127.0.0.1", s.port, "r1", tls=client_tls)
        assert (bytes(got.data), got.meta) == (b"".join(payload), {"num_blocks": 2})
    finally:
        s.close()


@pytest.mark.parametrize("case", ["plaintext puller", "puller without certificate", "stranger CA",
                                  "tls puller of plaintext sender"])
def test_no_pull_without_verified_tls_both_ways(pki, case):
    mutual, _ = tls(cert_path=pki["cert"], key_path=pki["key"], client_ca_cert_path=pki["ca"])
    server_tls = None if case == "tls puller of plaintext sender" else mutual
    client_tls = {"plaintext puller": None,
                  "puller without certificate": tls(ca_cert_path=pki["ca"])[1],
                  "stranger CA": tls(ca_cert_path=pki["stranger"], client_cert_path=pki["client_cert"],
                                     client_key_path=pki["client_key"])[1],
                  "tls puller of plaintext sender": tls(ca_cert_path=pki["ca"])[1]}[case]
    s = sender(server_tls)
    try:
        assert s.stage("r1", [b"secret kv" * 1000])
        with pytest.raises(TransferError):
            pull("127.0.0.1", s.port, "r1", wait_s=0, timeout=5, retries=0, tls=client_tls)
        assert s.store.held_bytes > 0, "the transfer stays staged for a puller that can verify"
    finally:
        s.close()

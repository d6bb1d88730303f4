"""Mutual TLS end to end, configured with NVIDIA Dynamo's flags (which set their variables):
- the request plane (`--tcp-tls-*`): a mocker serving TLS that demands client certificates, and a
  frontend that verifies it and presents its own, serve the official `openai` client; a frontend
  without the CA and certificate gets no plaintext fallback: its requests fail, the worker serves on;
- NATS (`--nats-tls-*`): against a real nats-server requiring TLS and client certificates, a
  worker's KV events reach the frontend's router over the nats event plane."""

from __future__ import annotations

import subprocess

import openai
import pytest
import trustme

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until
from tests.fixtures.servers import NATS_BIN, _nats_ready, require_binary, stop

pytestmark = pytest.mark.e2e


def _pki(tmp):
    """A throwaway CA and certificates: the worker's and NATS's for 127.0.0.1, a client's."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    for name, identity in (("worker", "127.0.0.1"), ("frontend", "frontend.dynamo.svc")):
        cert = ca.issue_cert(identity)
        cert.cert_chain_pems[0].write_to_path(str(tmp / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(tmp / f"{name}.key"))


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    _pki(tmp)
    c = Cluster(tmp, tiny_model)
    try:
        c.mocker("--tcp-tls-cert-path", str(tmp / "worker.pem"), "--tcp-tls-key-path", str(tmp / "worker.key"),
                 "--tcp-tls-client-ca-cert-path", str(tmp / "ca.pem"), system_port=False)
        c.frontend("--tcp-tls-ca-cert-path", str(tmp / "ca.pem"), "--tcp-tls-client-cert-path",
                   str(tmp / "frontend.pem"), "--tcp-tls-client-key-path", str(tmp / "frontend.key"))
        c.wait_workers("tiny", 1, timeout=120)
        yield c
    finally:
        c.stop()


def test_a_frontend_with_the_ca_and_its_certificate_is_served_over_mutual_tls(cluster):
    client = cluster.openai_client()
    assert client.completions.create(model="tiny", prompt="hi", max_tokens=4).usage.completion_tokens == 4
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=4, stream=True)
    assert sum(1 for chunk in stream if chunk.choices and chunk.choices[0].delta.content) >= 1


def test_a_frontend_without_them_gets_no_plaintext_fallback(cluster):
    plain = Cluster(cluster.tmp, cluster.model_dir)  # same discovery store, no TLS settings
    try:
        plain.frontend()
        plain.wait_workers("tiny", 1, timeout=60)  # it sees the worker...
        with pytest.raises(openai.APIStatusError) as err:  # ...and cannot talk to it
            plain.openai_client(timeout=60).completions.create(model="tiny", prompt="hi", max_tokens=2)
        assert err.value.status_code >= 500
    finally:
        plain.stop()
    client = cluster.openai_client()  # the worker was not disturbed
    assert client.completions.create(model="tiny", prompt="hi", max_tokens=2).usage.completion_tokens == 2


def test_kv_events_reach_the_router_over_nats_with_mutual_tls(tiny_model, tmp_path):
    require_binary(NATS_BIN)
    _pki(tmp_path)
    port = free_port()
    with open(tmp_path / "nats.log", "wb") as log:
        nats = subprocess.Popen([NATS_BIN, "-a", "127.0.0.1", "-p", str(port), "--tls", "--tlscert",
                                 str(tmp_path / "worker.pem"), "--tlskey", str(tmp_path / "worker.key"), "--tlsverify",
                                 "--tlscacert", str(tmp_path / "ca.pem")], stdout=log, stderr=subprocess.STDOUT)
    tls = ["--nats-tls-ca-cert-path", str(tmp_path / "ca.pem"), "--nats-tls-client-cert-path",
           str(tmp_path / "frontend.pem"), "--nats-tls-client-key-path", str(tmp_path / "frontend.key")]
    c = Cluster(tmp_path, tiny_model, extra_env={"DYN_EVENT_PLANE": "nats", "NATS_SERVER": f"nats://127.0.0.1:{port}"})
    try:
        wait_until(lambda: _nats_ready(port), 30, "nats-server")
        c.mocker(*tls, system_port=False)
        c.frontend("--router-mode", "kv", *tls)
        c.wait_workers("tiny", 1, timeout=120)
        mode = {"model": "tiny", "mode": "kv-events"}
        wait_until(lambda: metric_value(http_get(c.base_url + "/metrics")[1].decode(), "dynamo_frontend_router_mode",
                                        mode) == 1.0, 60, "exact KV routing over NATS")
        client = c.openai_client()
        assert client.completions.create(model="tiny", prompt="hi " * 80, max_tokens=2).usage.completion_tokens == 2
    finally:
        c.stop()
        stop(nats)

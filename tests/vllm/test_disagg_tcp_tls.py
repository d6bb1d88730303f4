"""Disaggregated prefill/decode with real vLLM CPU engines under the request plane's TLS settings
(`DYN_TCP_TLS_*` on every process): the frontend reaches both workers over TLS, the decode worker pulls
the prompt's KV from the prefill worker over TLS (our TCP transport), and greedy output is token-exact
with vLLM's own. The prefill worker's KV port refuses a plaintext puller and serves a verified one.

Both workers name the connector in `--kv-transfer-config` (kv_both, as Dynamo's disagg.yaml recipes
do) instead of `--kv-transfer-backend tcp` (tests/vllm/test_disagg_tcp.py): the worker fills in the
pull endpoint the config does not give, or the prefill worker would advertise port 0 and no KV would
cross (the decode worker recomputing every prompt)."""

from __future__ import annotations

import re

import pytest

from dynamo.kv_transfer import TransferError, TransferNotFound, pull
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.tls import ClientTls
from tests.fixtures.pki import make_pki
from tests.vllm.conftest import VllmCluster
from tests.vllm.disagg_helpers import check_token_exact, start_pair

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1200)]

USER_CONFIG = '{"kv_connector":"DynamoTcpConnector","kv_role":"kv_both"}'


@pytest.fixture(scope="module")
def env(vllm_python, vllm_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-disagg-tls")
    pki = make_pki(tmp)
    cluster = VllmCluster(tmp, vllm_model, vllm_python)
    cluster.env.update({"DYN_TCP_TLS_CERT_PATH": pki["cert"], "DYN_TCP_TLS_KEY_PATH": pki["key"],
                        "DYN_TCP_TLS_CA_CERT_PATH": pki["ca"]})
    try:
        pair = start_pair(cluster, "tls", ["--disaggregation-mode", "prefill", "--kv-transfer-config", USER_CONFIG],
                          ["--disaggregation-mode", "decode", "--kv-transfer-config", USER_CONFIG])
        yield {**pair, "pki": pki}
    finally:
        cluster.stop()


def test_kv_crosses_over_tls_token_exact(env):
    check_token_exact(env, "tcp")


def test_the_kv_port_speaks_only_verified_tls(env):
    found = re.search(r"serving pulls on ([\d.]+):(\d+)", env["prefill"].log_path.read_text(errors="replace"))
    assert found, env["prefill"].log()
    host, port = found.group(1), int(found.group(2))
    assert port > 0  # filled in by the worker: the config names none
    with pytest.raises(TransferError) as plaintext:
        pull(host, port, "no-such-transfer", wait_s=0, timeout=10, retries=0)
    assert not isinstance(plaintext.value, TransferNotFound)
    verified = ClientTls.of(RuntimeSettings.from_env({"DYN_TCP_TLS_CA_CERT_PATH": env["pki"]["ca"]}))
    with pytest.raises(TransferNotFound):  # a verified TLS puller reaches the sender and asks
        pull(host, port, "no-such-transfer", wait_s=0, timeout=10, retries=0, tls=verified)

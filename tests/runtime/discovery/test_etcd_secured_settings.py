"""The ETCD_AUTH_* settings without a server: Dynamo's variable names, secrets kept out of config
dumps, TLS material that cannot be loaded failing with the variable's name (never the key's text),
and how watch refusals read. The real-etcd behaviour is in test_etcd_secured.py."""

from __future__ import annotations

import json

import pytest

from dynamo.runtime.config import REDACTED, config_values
from dynamo.runtime.config_dump import DumpConfigTo, config_record
from dynamo.runtime.discovery.base import DiscoveryUnavailable
from dynamo.runtime.discovery.etcd import EtcdStore
from dynamo.runtime.discovery.etcd_gateway import EtcdError, _check, tls_context, token_refused
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.tls import TlsConfigError
from tests.fixtures.pki import make_pki

ENV = {"ETCD_AUTH_USERNAME": "dynamo", "ETCD_AUTH_PASSWORD": "pw-123", "ETCD_AUTH_CA": "/etc/etcd/ca.pem",
       "ETCD_AUTH_CLIENT_CERT": "/etc/etcd/client.pem", "ETCD_AUTH_CLIENT_KEY": "/etc/etcd/client.key"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_dynamos_variable_names_are_read():
    settings = RuntimeSettings.from_env(ENV)
    assert (settings.etcd_auth_username, settings.etcd_auth_password, settings.etcd_auth_ca,
            settings.etcd_auth_client_cert, settings.etcd_auth_client_key) == tuple(ENV.values())


def test_the_password_and_the_client_key_never_reach_a_config_dump():
    values = config_values(RuntimeSettings.from_env(ENV))
    assert values["etcd_auth_password"] == REDACTED and values["etcd_auth_client_key"] == REDACTED
    assert values["etcd_auth_username"] == "dynamo" and values["etcd_auth_ca"] == "/etc/etcd/ca.pem"
    dumped = json.dumps(config_record(DumpConfigTo(), "dynamo.sample", environ=ENV, argv=[]))
    assert "pw-123" not in dumped and "client.key" not in dumped


def test_tls_material_that_cannot_be_loaded_names_its_variable(pki, tmp_path):
    assert tls_context(None, None, None) is None
    with pytest.raises(TlsConfigError, match="ETCD_AUTH_CLIENT_CERT and ETCD_AUTH_CLIENT_KEY go together"):
        tls_context(pki["ca"], pki["client_cert"], None)
    with pytest.raises(TlsConfigError, match=f"ETCD_AUTH_CA: cannot load {tmp_path}/missing.pem"):
        tls_context(str(tmp_path / "missing.pem"), None, None)
    broken_key = "-----BEGIN PRIVATE KEY-----\nnot-a-key-secret-bits\n-----END PRIVATE KEY-----\n"
    with pytest.raises(TlsConfigError, match="ETCD_AUTH_CLIENT_CERT / ETCD_AUTH_CLIENT_KEY") as bad:
        tls_context(pki["ca"], pki["client_cert"], broken_key)
    assert "secret-bits" not in str(bad.value) and "(PEM text)" in str(bad.value)


def test_a_user_without_a_password_is_refused_rather_than_ignored():
    with pytest.raises(DiscoveryUnavailable, match="ETCD_AUTH_USERNAME and ETCD_AUTH_PASSWORD go together"):
        EtcdStore(endpoints="http://127.0.0.1:2379", settings=RuntimeSettings.from_env({"ETCD_AUTH_USERNAME": "u"}))


def test_scheme_less_endpoints_mean_https_once_tls_is_configured(pki):
    with_ca = RuntimeSettings.from_env({"ETCD_AUTH_CA": pki["ca"]})
    assert EtcdStore(endpoints="etcd-0:2379,etcd-1:2379", settings=with_ca).endpoints == [
        "https://etcd-0:2379", "https://etcd-1:2379"]
    plain = RuntimeSettings.from_env({})
    assert EtcdStore(endpoints="etcd-0:2379", settings=plain).endpoints == ["http://etcd-0:2379"]


def test_a_watch_refused_for_its_token_is_an_error_a_compacted_one_is_not():
    refused = {"result": {"created": True, "canceled": True,
                          "cancel_reason": "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}
    with pytest.raises(EtcdError) as error:
        _check(refused)
    assert token_refused(error.value)
    compacted = {"result": {"canceled": True, "cancel_reason": "mvcc: required revision has been compacted"}}
    assert _check(compacted) is compacted
    assert not token_refused(EtcdError(3, "etcdserver: authentication failed, invalid user ID or password"))

"""Runtime settings: every variable NVIDIA Dynamo manifests set maps to one typed field with
Dynamo's default, bad values name their variable, and the frontend's HTTP settings resolve
flag > env > default (with the operator's DYNAMO_PORT as the port's fallback)."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile

import pytest

from dynamo.frontend.config import FrontendConfig
from dynamo.runtime.config import build_parser, parse_config
from dynamo.runtime.discovery.file_layout import default_root
from dynamo.runtime.distributed import advertise_host
from dynamo.runtime.event_plane.base import resolve_kind
from dynamo.runtime.process import log_directives, log_level_from_env
from dynamo.runtime.settings import RuntimeSettings

# (variable, field, default, a value as text, that value parsed)
RUNTIME_VARS = [
    ("DYN_DISCOVERY_BACKEND", "discovery_backend", None, "etcd", "etcd"),
    ("DYN_FILE_KV", "file_kv", None, "/srv/kv", "/srv/kv"),
    ("ETCD_ENDPOINTS", "etcd_endpoints", None, "http://a:2379,b:2379", "http://a:2379,b:2379"),
    ("DYN_ETCD_CONNECT_TIMEOUT_SECS", "etcd_connect_timeout_secs", 0.0, "120", 120.0),
    ("DYN_EVENT_PLANE", "event_plane", None, "nats", "nats"),
    ("NATS_SERVER", "nats_server", None, "nats://n:4222", "nats://n:4222"),
    ("DYN_EVENT_PLANE_HOST", "event_plane_host", None, "0.0.0.0", "0.0.0.0"),
    ("DYN_TCP_RPC_HOST", "tcp_rpc_host", None, "10.0.0.5", "10.0.0.5"),
    ("DYN_TCP_RPC_PORT", "tcp_rpc_port", 0, "7000", 7000),
    ("POD_IP", "pod_ip", None, "10.1.2.3", "10.1.2.3"),
    ("DYN_TCP_CONNECT_TIMEOUT", "tcp_connect_timeout", 3.0, "0.5", 0.5),
    ("DYN_SYSTEM_ENABLED", "system_enabled", None, "true", True),
    ("DYN_SYSTEM_PORT", "system_port", None, "9090", 9090),
    ("DYN_SYSTEM_HOST", "system_host", "0.0.0.0", "127.0.0.1", "127.0.0.1"),
    ("DYN_LOG", "log", None, "dynamo=debug,warn", "dynamo=debug,warn"),
    ("DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS", "graceful_shutdown_grace_period_secs", 5.0, "2", 2.0),
    ("DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS", "runtime_graceful_shutdown_timeout_secs", 900.0, "30", 30.0),
    ("ETCD_LEASE_TTL", "etcd_lease_ttl", 10.0, "4", 4.0),
]


@pytest.mark.parametrize("env, field, default, raw, value", RUNTIME_VARS)
def test_each_variable_sets_its_field_and_defaults_as_dynamo(env, field, default, raw, value):
    assert getattr(RuntimeSettings.from_env({}), field) == default
    settings = RuntimeSettings.from_env({env: raw})
    assert getattr(settings, field) == value
    assert getattr(RuntimeSettings.from_env({env: ""}), field) == default  # empty counts as unset
    others = [f for _, f, *_ in RUNTIME_VARS if f != field]
    assert all(getattr(settings, f) == getattr(RuntimeSettings.from_env({}), f) for f in others)


@pytest.mark.parametrize("env, raw", [
    ("DYN_TCP_RPC_PORT", "eighty"),
    ("DYN_TCP_CONNECT_TIMEOUT", "soon"),
    ("DYN_ETCD_CONNECT_TIMEOUT_SECS", "1m"),
    ("DYN_SYSTEM_PORT", "9090x"),
    ("DYN_SYSTEM_ENABLED", "maybe"),
    ("DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS", "five"),
    ("DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS", "forever"),
])
def test_invalid_value_names_its_variable(env, raw):
    with pytest.raises(SystemExit, match=f"invalid value for {env}"):
        RuntimeSettings.from_env({env: raw})


def test_only_variables_dynamo_takes_as_flags_get_one():
    options = {o for a in build_parser(RuntimeSettings)._actions for o in a.option_strings}
    tls = {f"--tcp-tls-{n}" for n in ("cert-path", "key-path", "ca-cert-path", "insecure", "server-name",
                                      "handshake-timeout", "client-cert-path", "client-key-path", "client-ca-cert-path")}
    nats = {f"--nats-tls-{n}" for n in ("ca-cert-path", "insecure", "client-cert-path", "client-key-path")}
    assert options == {"-h", "--help", "--discovery-backend", "--event-plane", *tls, "--no-tcp-tls-insecure", *nats,
                       "--no-nats-tls-insecure", "--health-check-payload"}  # a worker flag of Dynamo's


@pytest.mark.parametrize("environ, port", [
    ({}, None),
    ({"DYN_SYSTEM_PORT": "9090"}, 9090),
    ({"DYN_SYSTEM_PORT": "0"}, 0),  # any free port
    ({"DYN_SYSTEM_PORT": "-1"}, None),  # Dynamo's "off"
    # Dynamo 1.6.1: DYN_SYSTEM_ENABLED is deprecated, the port alone decides (false beside a port still serves)
    ({"DYN_SYSTEM_ENABLED": "true"}, None),
    ({"DYN_SYSTEM_ENABLED": "true", "DYN_SYSTEM_PORT": "9090"}, 9090),
    ({"DYN_SYSTEM_ENABLED": "false", "DYN_SYSTEM_PORT": "9090"}, 9090),
])
def test_system_server_port(environ, port):
    assert RuntimeSettings.from_env(environ).system_server_port() == port


@pytest.mark.parametrize("spec, default, loggers", [
    ("warn", logging.WARNING, {}),
    ("warn,dynamo_llm::http::service::metrics=info", logging.WARNING, {"dynamo.request": logging.INFO}),
    ("dynamo=debug,warn", logging.WARNING, {"dynamo": logging.DEBUG}),  # order does not matter
    ("warn,dynamo=debug", logging.WARNING, {"dynamo": logging.DEBUG}),  # third-party loggers stay at warn
    ("dynamo_runtime=debug", logging.INFO, {"dynamo.runtime": logging.DEBUG}),
    ("info,dynamo_llm::kv_router::scheduler=trace", logging.INFO, {"dynamo.router": logging.DEBUG}),
    ("error,dynamo_mocker=debug,dynamo.frontend=warn,uvicorn=off", logging.ERROR,
     {"dynamo.mocker": logging.DEBUG, "dynamo.frontend": logging.WARNING, "uvicorn": logging.CRITICAL + 10}),
    ("chatty,dynamo=loud", logging.INFO, {}),  # not levels: ignored
])
def test_dyn_log_directives_as_dynamos_env_filter(spec, default, loggers):
    assert log_directives(spec) == (default, loggers)


def test_a_target_directive_sets_its_children_and_leaves_other_loggers_at_the_default():
    level, loggers = log_directives("warn,dynamo=debug")
    root = logging.Manager(logging.RootLogger(level))  # a logger tree of its own, as configure_logging sets one up
    for name, target_level in loggers.items():
        root.getLogger(name).setLevel(target_level)
    assert root.getLogger("dynamo.frontend.http_app").getEffectiveLevel() == logging.DEBUG
    assert root.getLogger("httpx").getEffectiveLevel() == logging.WARNING


def test_read_at_call_time_parsed_once(monkeypatch):
    monkeypatch.setenv("DYN_TCP_CONNECT_TIMEOUT", "7")
    first = RuntimeSettings.from_env()
    assert first.tcp_connect_timeout == 7.0 and RuntimeSettings.from_env() is first
    monkeypatch.setenv("DYN_TCP_CONNECT_TIMEOUT", "8")
    assert RuntimeSettings.from_env().tcp_connect_timeout == 8.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.tcp_connect_timeout = 1.0  # frozen: one shared instance per environment


def test_consumers_use_the_settings_they_are_given():
    s = RuntimeSettings.from_env
    assert advertise_host("etcd", s({"DYN_TCP_RPC_HOST": "10.0.0.5", "POD_IP": "10.1.2.3"})) == ("10.0.0.5",) * 2
    assert advertise_host("etcd", s({"POD_IP": "10.1.2.3"})) == ("0.0.0.0", "10.1.2.3")
    assert advertise_host("file", s({"POD_IP": "10.1.2.3"})) == ("127.0.0.1", "127.0.0.1")
    assert resolve_kind(None, "etcd", s({"NATS_SERVER": "nats://n:4222"})) == "nats"
    assert resolve_kind(None, "etcd", s({})) == "zmq"
    assert resolve_kind(None, "etcd", s({"NATS_SERVER": "nats://n:4222", "DYN_EVENT_PLANE": "zmq"})) == "zmq"
    assert s({}).nats_url() == "nats://localhost:4222"
    assert default_root(s({"DYN_FILE_KV": "/srv/kv"})) == "/srv/kv"
    assert default_root(s({})) == os.path.join(tempfile.gettempdir(), "dynamo_store_kv")
    assert log_level_from_env(settings=s({"DYN_LOG": "warn,dynamo=debug"})) == logging.WARNING  # the default
    assert log_level_from_env(settings=s({"DYN_LOG": "warn"})) == logging.WARNING
    assert log_level_from_env("error", settings=s({})) == logging.ERROR


# ----- frontend ------------------------------------------------------------------------------

FRONTEND_VARS = [  # (field, variable, default, env text, env value, flag, flag text, flag value)
    ("http_body_limit_mb", "DYN_HTTP_BODY_LIMIT_MB", 192, "1", 1.0, "--http-body-limit-mb", "0.5", 0.5),
    ("http_overload_status_code", "DYN_HTTP_OVERLOAD_STATUS_CODE", 529, "503", 503,
     "--http-overload-status-code", "429", 429),
    ("http_graceful_shutdown_timeout_secs", "DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS", 5.0, "120", 120.0,
     "--http-graceful-shutdown-timeout-secs", "1", 1.0),
    ("http_port", "DYN_HTTP_PORT", 8000, "8123", 8123, "--http-port", "8200", 8200),
]


@pytest.mark.parametrize("field, env, default, raw, value, flag, flag_raw, flag_value", FRONTEND_VARS)
def test_frontend_http_settings_flag_over_env_over_default(field, env, default, raw, value, flag, flag_raw,
                                                           flag_value):
    assert getattr(parse_config(FrontendConfig, [], environ={}), field) == default
    assert getattr(parse_config(FrontendConfig, [], environ={env: raw}), field) == value
    assert getattr(parse_config(FrontendConfig, [flag, flag_raw], environ={env: raw}), field) == flag_value


def test_frontend_http_settings_are_in_help_with_their_variables():
    text = " ".join(build_parser(FrontendConfig).format_help().split())
    for _, env, _, _, _, flag, _, _ in FRONTEND_VARS:
        assert flag in text and env in text
    assert "[env DYN_HTTP_PORT, else DYNAMO_PORT]" in text


def test_dynamo_port_is_the_operators_fallback_for_the_http_port():
    assert parse_config(FrontendConfig, [], environ={"DYNAMO_PORT": "9000"}).http_port == 9000
    assert parse_config(FrontendConfig, [], environ={"DYNAMO_PORT": "9000", "DYN_HTTP_PORT": "8123"}).http_port == 8123
    assert parse_config(FrontendConfig, ["--http-port", "8200"], environ={"DYNAMO_PORT": "9000"}).http_port == 8200
    with pytest.raises(SystemExit, match="invalid value for DYNAMO_PORT"):
        parse_config(FrontendConfig, [], environ={"DYNAMO_PORT": "http"})


@pytest.mark.parametrize("env, raw", [
    ("DYN_HTTP_BODY_LIMIT_MB", "lots"),
    ("DYN_HTTP_OVERLOAD_STATUS_CODE", "5xx"),
    ("DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS", "later"),
])
def test_frontend_invalid_value_names_its_variable(env, raw):
    with pytest.raises(SystemExit, match=f"invalid value for {env}"):
        parse_config(FrontendConfig, [], environ={env: raw})


@pytest.mark.parametrize("argv", [
    ["--http-body-limit-mb", "0"],
    ["--http-overload-status-code", "1000"],
    ["--http-graceful-shutdown-timeout-secs", "-1"],
])
def test_frontend_rejects_out_of_range_http_settings(argv):
    with pytest.raises(SystemExit):
        parse_config(FrontendConfig, argv, environ={})


def test_a_sigterm_drain_lasts_the_grace_period_then_the_runtime_timeout_as_in_dynamo():
    assert RuntimeSettings.from_env({}).drain_secs() == 905.0
    assert RuntimeSettings.from_env({"DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "2",
                                     "DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "0"}).drain_secs() == 2.0


@pytest.mark.parametrize("env, given, backend", [
    ({}, None, "file"),  # one machine, nothing to run: the README's quick start
    ({"ETCD_ENDPOINTS": "http://etcd:2379"}, None, "etcd"),  # a deployment following Dynamo's docs
    ({"ETCD_ENDPOINTS": "http://etcd:2379", "DYN_DISCOVERY_BACKEND": "file"}, None, "file"),
    ({"ETCD_ENDPOINTS": "http://etcd:2379"}, "mem", "mem"),  # a component's flag wins
    ({"DYN_DISCOVERY_BACKEND": "kubernetes"}, None, "kubernetes"),
])
def test_the_discovery_backend_defaults_to_etcd_once_its_endpoints_are_set(env, given, backend):
    settings = RuntimeSettings.from_env(env)
    assert settings.backend(given) == backend
    assert settings.etcd_urls() == env.get("ETCD_ENDPOINTS", "http://localhost:2379")


def test_dynamos_etcd_startup_wait_is_read_too():
    assert RuntimeSettings.from_env({"ETCD_STARTUP_CONNECT_TIMEOUT_SECONDS": "30"}).etcd_connect_timeout_secs == 30.0
    assert RuntimeSettings.from_env({"DYN_ETCD_CONNECT_TIMEOUT_SECS": "5",
                                     "ETCD_STARTUP_CONNECT_TIMEOUT_SECONDS": "30"}).etcd_connect_timeout_secs == 5.0


def test_the_most_specific_dyn_log_directive_wins_whatever_the_order():
    """Two Rust targets map to the request lines' logger: the longer one decides, in either order."""
    for spec in ("info,dynamo_llm::http::service::metrics=warn,dynamo_llm=debug",
                 "info,dynamo_llm=debug,dynamo_llm::http::service::metrics=warn"):
        _, loggers = log_directives(spec)
        assert loggers["dynamo.request"] == logging.WARNING and loggers["dynamo.frontend"] == logging.DEBUG, spec

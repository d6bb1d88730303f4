"""The process-wide runtime settings: the environment variables that shape discovery, the
request plane, the event plane, the system server, logging and shutdown, in one typed place.

This module owns the boundary between the process environment and the runtime. Every
other runtime module asks `RuntimeSettings.from_env()` instead of reading `os.environ`,
so a bad value fails with a message naming its variable instead of a bare `ValueError`
deep inside start-up, and `dump_config(RuntimeSettings.from_env())` shows what is in effect.

Names and defaults are NVIDIA Dynamo's (its manifests and operator set these variables);
only those Dynamo also takes as flags (`--discovery-backend`, `--event-plane`) get one. Those two
are also fields of every component's config: `discovery_backend_setting()` and
`event_plane_setting()` declare them once, so every component accepts the same values (the
operator injects DYN_DISCOVERY_BACKEND=kubernetes into every pod it runs, workers included).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from dynamo.runtime.config import env_names, from_namespace, setting

DEFAULT_NATS_SERVER = "nats://localhost:4222"
DISCOVERY_BACKENDS = ("file", "etcd", "mem", "kubernetes")
DEFAULT_ETCD_ENDPOINTS = "http://localhost:2379"
EVENT_PLANES = ("zmq", "nats")


def discovery_backend_setting() -> Any:
    """The `--discovery-backend` / DYN_DISCOVERY_BACKEND field, the same in every component."""
    return setting(None, "Discovery backend: file (one machine), etcd, mem, kubernetes (EndpointSlices in a pod; "
                         "outside one, etcd). Default: etcd when ETCD_ENDPOINTS is set (NVIDIA Dynamo's default is "
                         "etcd), else file", choices=DISCOVERY_BACKENDS)


def event_plane_setting() -> Any:
    """The `--event-plane` / DYN_EVENT_PLANE field (KV events and load metrics), the same everywhere."""
    return setting(None, "Event plane for KV events and load metrics (default: nats with etcd discovery when "
                         "NATS_SERVER is set, else zmq)", choices=EVENT_PLANES)


@dataclass(frozen=True)
class RuntimeSettings:
    """Runtime settings read from the environment (no flags unless Dynamo has one)."""

    # discovery
    discovery_backend: str = discovery_backend_setting()
    file_kv: str | None = setting(None, "Root directory of the file discovery store (default: "
                                        "<tmpdir>/dynamo_store_kv)", flag=False)
    etcd_endpoints: str | None = setting(None, f"etcd endpoints, comma-separated (default {DEFAULT_ETCD_ENDPOINTS}); "
                                               "set, they also make etcd the default discovery backend",
                                         env="ETCD_ENDPOINTS", flag=False)
    etcd_lease_ttl: float = setting(10.0, "Seconds a process's registrations outlive it (its lease's TTL; renewed "
                                          "every third of it)", env="ETCD_LEASE_TTL", flag=False)
    etcd_connect_timeout_secs: float = setting(0.0, "How long start-up keeps trying an unreachable etcd "
                                                    "(0: fail at once)", flag=False,
                                               env=("DYN_ETCD_CONNECT_TIMEOUT_SECS",
                                                    "ETCD_STARTUP_CONNECT_TIMEOUT_SECONDS"))  # ours, Dynamo's
    # secured etcd (Dynamo's names); each TLS value is a PEM file's path or, as Dynamo reads it, the PEM text
    etcd_auth_username: str | None = setting(None, "etcd user: with ETCD_AUTH_PASSWORD, every etcd call carries "
                                                   "an auth token (renewed when etcd expires it)",
                                             env="ETCD_AUTH_USERNAME", flag=False)
    etcd_auth_password: str | None = setting(None, "Password of ETCD_AUTH_USERNAME", env="ETCD_AUTH_PASSWORD",
                                             flag=False, secret=True)
    etcd_auth_ca: str | None = setting(None, "PEM CA that https etcd endpoints are verified against (default: the "
                                             "system CAs); set, scheme-less endpoints default to https",
                                       env="ETCD_AUTH_CA", flag=False)
    etcd_auth_client_cert: str | None = setting(None, "PEM client certificate presented to etcd (mutual TLS)",
                                                env="ETCD_AUTH_CLIENT_CERT", flag=False)
    # secret: Dynamo takes the key's PEM text here, which a config dump must not show
    etcd_auth_client_key: str | None = setting(None, "PEM private key of ETCD_AUTH_CLIENT_CERT",
                                               env="ETCD_AUTH_CLIENT_KEY", flag=False, secret=True)
    # kubernetes discovery (the operator injects the pod's identity through the downward API)
    pod_name: str | None = setting(None, "This pod's name: its DynamoWorkerMetadata is named after it",
                                   env="POD_NAME", flag=False)
    pod_namespace: str | None = setting(None, "This pod's namespace (default: the service account's)",
                                        env="POD_NAMESPACE", flag=False)
    pod_uid: str | None = setting(None, "This pod's uid: the owner of its DynamoWorkerMetadata (garbage-collected "
                                        "with the pod)", env="POD_UID", flag=False)
    kube_discovery_mode: str = setting("pod", "pod, or container (one DynamoWorkerMetadata per container, named "
                                              "{pod}-{container})", env="DYN_KUBE_DISCOVERY_MODE", flag=False,
                                       choices=["pod", "container"])
    container_name: str | None = setting(None, "This container's name (container mode)", env="CONTAINER_NAME",
                                         flag=False)
    kubernetes_service_host: str | None = setting(None, "API server host (set in every pod)",
                                                  env="KUBERNETES_SERVICE_HOST", flag=False)
    kubernetes_service_port: int = setting(443, "API server port", env="KUBERNETES_SERVICE_PORT", flag=False)
    kube_api_server: str | None = setting(None, "API server URL instead of the in-cluster one (e.g. "
                                                "http://127.0.0.1:8001 from `kubectl proxy`)", flag=False)
    # event plane
    event_plane: str | None = event_plane_setting()
    nats_server: str | None = setting(None, f"NATS server URL(s) (default {DEFAULT_NATS_SERVER}); setting it "
                                            "with etcd discovery selects the nats event plane",
                                      env="NATS_SERVER", flag=False)
    nats_tls_ca_cert_path: str | None = setting(None, "PEM CA the NATS server's certificate is verified against "
                                                      "(turns TLS to NATS on)", env="NATS_TLS_CA_CERT_PATH",
                                                flag="--nats-tls-ca-cert-path")
    nats_tls_insecure: bool = setting(False, "TLS to NATS without verifying the server (development only)",
                                      env="NATS_TLS_INSECURE", flag="--nats-tls-insecure")
    nats_tls_client_cert_path: str | None = setting(None, "PEM certificate presented to NATS (mutual TLS)",
                                                    env="NATS_TLS_CLIENT_CERT_PATH",
                                                    flag="--nats-tls-client-cert-path")
    nats_tls_client_key_path: str | None = setting(None, "PEM private key of the NATS client certificate",
                                                   env="NATS_TLS_CLIENT_KEY_PATH", flag="--nats-tls-client-key-path")
    event_plane_host: str | None = setting(None, "ZMQ publisher bind host (0.0.0.0 or *: all, advertise the host "
                                                 "name's address; default: 127.0.0.1 with file/mem discovery, else "
                                                 "all, advertising POD_IP or the host name's address, as the request "
                                                 "plane does)", flag=False)
    # request plane
    tcp_rpc_host: str | None = setting(None, "Request-plane bind and advertised host", flag=False)
    tcp_rpc_port: int = setting(0, "Request-plane port (0: any free port)", flag=False)
    pod_ip: str | None = setting(None, "Advertised request-plane host when bound to all interfaces "
                                       "(Kubernetes downward API)", env="POD_IP", flag=False)
    tcp_connect_timeout: float = setting(3.0, "Seconds to connect to a worker", flag=False)
    # request-plane TLS (NVIDIA Dynamo's names): a server with a certificate serves TLS; a caller
    # with a CA (or told to skip verification) speaks it; client certificates make it mutual.
    tcp_tls_cert_path: str | None = setting(None, "PEM certificate of this process's request-plane server",
                                            flag="--tcp-tls-cert-path")
    tcp_tls_key_path: str | None = setting(None, "PEM private key of that certificate", flag="--tcp-tls-key-path")
    tcp_tls_ca_cert_path: str | None = setting(None, "PEM CA this process verifies the workers it calls against "
                                                     "(turns TLS on for its calls)", flag="--tcp-tls-ca-cert-path")
    tcp_tls_insecure: bool = setting(False, "Call workers over TLS without verifying them (development only)",
                                     flag="--tcp-tls-insecure")
    tcp_tls_server_name: str | None = setting(None, "Name the workers' certificates are verified against (default: "
                                                    "the address's host)", flag="--tcp-tls-server-name")
    tcp_tls_handshake_timeout_secs: float = setting(3.0, "Seconds a TLS handshake may take",
                                                    flag="--tcp-tls-handshake-timeout")
    tcp_tls_client_cert_path: str | None = setting(None, "PEM certificate this process presents to the workers it "
                                                         "calls (mutual TLS)", flag="--tcp-tls-client-cert-path")
    tcp_tls_client_key_path: str | None = setting(None, "PEM private key of the client certificate",
                                                  flag="--tcp-tls-client-key-path")
    tcp_tls_client_ca_cert_path: str | None = setting(None, "PEM CA this process's server verifies callers' "
                                                            "certificates against (makes TLS mutual)",
                                                      flag="--tcp-tls-client-ca-cert-path")
    # system server, logging, shutdown
    system_enabled: bool | None = setting(None, "Deprecated, as in Dynamo 1.6.1: ignored with a warning "
                                          "(DYN_SYSTEM_PORT alone runs the system server)", flag=False)
    system_port: int | None = setting(None, "System server port (enables it; 0: any free port, -1: off)", flag=False)
    system_host: str = setting("0.0.0.0", "System server bind host", flag=False)
    log: str | None = setting(None, "Log level in RUST_LOG syntax (info, dynamo=debug,warn)", flag=False)
    logging_jsonl: bool = setting(False, "Write logs as JSON lines (time, level, target, message, fields) "
                                         "instead of text; request-trace lines become INFO", flag=False)
    # health endpoints, Dynamo's names: where probes look, and what "ready" waits for
    system_health_path: str = setting("/health", "The system server's health path", flag=False)
    system_live_path: str = setting("/live", "The system server's liveness path", flag=False)
    system_starting_health_status: str = setting("notready", "A worker's health before its endpoints serve: "
                                                 "notready (503) or ready", choices=("notready", "ready"), flag=False)
    system_use_endpoint_health_status: str | None = setting(
        None, "The endpoints (a JSON list of names, e.g. [\"generate\"], or comma-separated) that must serve "
              "before /health is 200; default: every endpoint the process serves", flag=False)
    http_svc_health_path: str = setting("/health", "The frontend's health path", flag=False)
    http_svc_live_path: str = setting("/live", "The frontend's liveness path", flag=False)
    http_svc_chat_path: str = setting("/v1/chat/completions", "The frontend's chat completions path", flag=False)
    http_svc_cmp_path: str = setting("/v1/completions", "The frontend's completions path", flag=False)
    http_svc_emb_path: str = setting("/v1/embeddings", "The frontend's embeddings path", flag=False)
    http_svc_rerank_path: str = setting("/v1/rerank", "The frontend's rerank path", flag=False)
    http_svc_models_path: str = setting("/v1/models", "The frontend's model list path", flag=False)
    # canary health checks (dynamo.worker.canary), Dynamo's names; its operator enables them in every pod
    health_check_enabled: bool = setting(False, "Send an idle worker's engine a canary request now and then; a "
                                                "failed one makes /health 503 until one passes", flag=False)
    canary_wait_time: float = setting(10.0, "Seconds a worker endpoint is idle before a canary request",
                                      env="DYN_CANARY_WAIT_TIME", flag=False)
    health_check_request_timeout: float = setting(3.0, "Seconds a canary request may take",
                                                  env="DYN_HEALTH_CHECK_REQUEST_TIMEOUT", flag=False)
    health_check_payload: str | None = setting(None, "The canary request: a JSON object (token_ids, "
                                                     "stop_conditions, sampling_options) or @file")
    graceful_shutdown_grace_period_secs: float = setting(
        5.0, "Seconds after SIGTERM before a worker's drain deadline starts counting (Dynamo's grace period)",
        flag=False)
    runtime_graceful_shutdown_timeout_secs: float = setting(
        900.0, "Seconds a worker's, router's or frontend's in-flight requests may run to completion while it "
               "shuts down before they are aborted (Dynamo's drain timeout; Kubernetes' "
               "terminationGracePeriodSeconds still bounds it)",
        flag=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        """The settings of `environ` (default: this process's environment).

        Parsed once per distinct set of values: the lookup is a few dict reads, so callers
        may ask at call time, and a test or embedding program that changes a variable sees it.
        Raises SystemExit naming the variable when a value does not parse."""
        environ = os.environ if environ is None else environ
        return _parse(tuple((name, environ[name]) for name in _ENV_NAMES if name in environ))

    def required_endpoints(self) -> set[str] | None:
        """DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS as endpoint names (None: every endpoint counts)."""
        raw = (self.system_use_endpoint_health_status or "").strip()
        if not raw:
            return None
        try:
            names = json.loads(raw) if raw.startswith("[") else raw.split(",")
        except ValueError:
            raise SystemExit(f"invalid value for DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS: {raw!r} (a JSON list of "
                             "endpoint names)") from None
        return {str(n).strip() for n in names if str(n).strip()}

    def backend(self, given: str | None = None) -> str:
        """The discovery backend: `given` (a component's --discovery-backend), else DYN_DISCOVERY_BACKEND, else
        etcd when ETCD_ENDPOINTS is set (a deployment following Dynamo's docs, whose default is etcd), else
        the embedded file store (one machine, nothing to run)."""
        chosen = given or self.discovery_backend or ("etcd" if self.etcd_endpoints else "file")
        return chosen.strip().lower()

    def etcd_urls(self) -> str:
        return self.etcd_endpoints or DEFAULT_ETCD_ENDPOINTS

    def drain_secs(self) -> float:
        """How long a SIGTERMed process's in-flight requests may run: the grace period, then the drain
        timeout, as NVIDIA Dynamo counts them (unregister, grace, drain up to the timeout, abort the rest)."""
        return self.graceful_shutdown_grace_period_secs + self.runtime_graceful_shutdown_timeout_secs

    def nats_url(self) -> str:
        return self.nats_server or DEFAULT_NATS_SERVER

    def system_server_port(self) -> int | None:
        """DYN_SYSTEM_PORT alone decides, as in Dynamo 1.6.1 (a manifest's DYN_SYSTEM_ENABLED=false beside a port
        still gets the server its probes and scrapes expect): a port runs it, none or a negative one does not."""
        if self.system_port is None or self.system_port < 0:
            return None
        return self.system_port


_ENV_NAMES = tuple(name for f in fields(RuntimeSettings) for name in env_names(f))


@functools.lru_cache(maxsize=16)
def _parse(items: tuple[tuple[str, str], ...]) -> RuntimeSettings:
    # from_namespace with no flags: env, else default, with its error naming the variable.
    return from_namespace(RuntimeSettings, argparse.Namespace(), dict(items))

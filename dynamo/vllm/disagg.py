"""Disaggregated prefill/decode for the vLLM worker: which KV transport, the connector
configuration each role needs, and the transfer metrics on the worker's /metrics.

`--kv-transfer-backend nixl|tcp|auto` picks vLLM's NixlConnector (UCX; `kv_buffer_device`
"cpu" on vLLM's CPU platform) or our `DynamoTcpConnector` (`dynamo.kv_transfer`); `auto`
takes NIXL when it imports and can create a UCX agent, TCP otherwise, and says so. A
user's `--kv-transfer-config` is kept as given, except that a `DynamoTcpConnector` in it gets
what the connector cannot work out for itself and did not say (module path, the advertised host
and a free port its pulls are served on). Prefill workers are `kv_producer`, decode
workers `kv_consumer` with `kv_load_failure_policy: recompute` (a failed pull prefills
locally instead of failing the request) and prefix caching off unless asked for (a local
cache hit would hide whether the KV really crossed).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dynamo.runtime.distributed import advertise_host
from dynamo.runtime.net import free_port
from dynamo.worker.role import WorkerRole

log = logging.getLogger(__name__)

BACKENDS = ("nixl", "tcp", "auto")
TCP_CONNECTOR = "DynamoTcpConnector"
TCP_MODULE = "dynamo.vllm.tcp_connector"
CONNECTOR_TRANSPORT = {"NixlConnector": "nixl", TCP_CONNECTOR: "tcp"}
NIXL_PROBE = ("from nixl._api import nixl_agent, nixl_agent_config\n"
              "nixl_agent('dynamo-probe', nixl_agent_config(backends=['UCX']))\n")


@dataclass
class DisaggSetup:
    transport: str  # nixl | tcp | <connector name> for a user connector
    connector: str
    reason: str


def nixl_works(timeout: float = 60.0) -> tuple[bool, str]:
    """NIXL importable and able to create a UCX agent (probed in a child: UCX can abort)."""
    try:
        proc = subprocess.run([sys.executable, "-c", NIXL_PROBE], capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"NIXL probe failed: {exc}"
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return False, f"NIXL unusable: {tail[0]}"
    return True, "NIXL agent with UCX created"


def configure(engine_args: Any, mode: WorkerRole, backend: str, discovery_backend: str,
              probe: Callable[[], tuple[bool, str]] = nixl_works) -> DisaggSetup | None:
    """Fill `engine_args.kv_transfer_config` for a prefill/decode worker (None for agg)."""
    user = engine_args.kv_transfer_config
    if mode == WorkerRole.AGG and user is None:
        return None
    if user is not None:
        name = user.kv_connector or ""
        if name == TCP_CONNECTOR:
            _fill_user_tcp_config(user, discovery_backend)
        return DisaggSetup(CONNECTOR_TRANSPORT.get(name, name), name, "from --kv-transfer-config")
    if mode == WorkerRole.DECODE and engine_args.enable_prefix_caching is None:
        engine_args.enable_prefix_caching = False
    transport, reason = backend, f"--kv-transfer-backend {backend}"
    if backend == "auto":
        ok, why = probe()
        transport, reason = ("nixl", why) if ok else ("tcp", f"{why}; using the TCP fallback")
    bind, host = advertise_host(discovery_backend)
    engine_args.kv_transfer_config = (_nixl_config(mode, host) if transport == "nixl"
                                      else _tcp_config(mode, bind, host))
    return DisaggSetup(transport, engine_args.kv_transfer_config.kv_connector, reason)


def _role(mode: WorkerRole) -> str:
    return "kv_producer" if mode == WorkerRole.PREFILL else "kv_consumer"


def _nixl_config(mode: WorkerRole, host: str) -> Any:
    from vllm.config import KVTransferConfig
    from vllm.platforms import current_platform

    # Each worker needs its own side channel (the prefill side's is advertised to decode).
    os.environ.setdefault("VLLM_NIXL_SIDE_CHANNEL_HOST", host)
    os.environ.setdefault("VLLM_NIXL_SIDE_CHANNEL_PORT", str(free_port("127.0.0.1")))
    kwargs: dict[str, Any] = {"kv_connector": "NixlConnector", "kv_role": _role(mode),
                              "kv_load_failure_policy": "recompute"}
    if current_platform.is_cpu():
        kwargs["kv_buffer_device"] = "cpu"
    return KVTransferConfig(**kwargs)


def _tcp_config(mode: WorkerRole, bind: str, host: str) -> Any:
    from vllm.config import KVTransferConfig

    extra = {"host": host, "bind_host": bind, "port": _free_port_on(bind)}
    return KVTransferConfig(kv_connector=TCP_CONNECTOR, kv_connector_module_path=TCP_MODULE, kv_role=_role(mode),
                            kv_load_failure_policy="recompute", kv_connector_extra_config=extra)


def _free_port_on(bind: str) -> int:
    return free_port(bind if bind != "0.0.0.0" else "127.0.0.1")


def _fill_user_tcp_config(user: Any, discovery_backend: str) -> None:
    """A `DynamoTcpConnector` named in --kv-transfer-config gets what `--kv-transfer-backend tcp` gives it
    (module path, pull endpoint), keeping whatever the user set: without a port it would serve pulls on
    a port no decode worker is told of, and advertise port 0."""
    if not user.kv_connector_module_path:
        user.kv_connector_module_path = TCP_MODULE
    extra = user.kv_connector_extra_config
    bind, host = advertise_host(discovery_backend)
    extra.setdefault("host", host)
    extra.setdefault("bind_host", bind)
    if not extra.get("port"):
        extra["port"] = _free_port_on(str(extra["bind_host"]))


def kv_bytes_per_block(vllm_config: Any) -> int:
    """Bytes of K and V for one block over all layers (what a transfer moves per block)."""
    import torch

    model, parallel = vllm_config.model_config, vllm_config.parallel_config
    dtype = vllm_config.cache_config.cache_dtype
    itemsize = (model.dtype if dtype == "auto" else getattr(torch, str(dtype), model.dtype)).itemsize
    return (2 * model.get_num_layers(parallel) * model.get_num_kv_heads(parallel) * model.get_head_size()
            * itemsize * vllm_config.cache_config.block_size)


class TransferMetrics:
    """`dynamo_component_kv_transfer_*` on the worker's /metrics."""

    def __init__(self, registry: CollectorRegistry, setup: DisaggSetup, bytes_per_block: int) -> None:
        self.setup = setup
        self.bytes_per_block = bytes_per_block
        Gauge("dynamo_component_kv_transfer_transport", "KV transport in use by this worker (1)", ("transport",),
              registry=registry).labels(setup.transport).set(1)
        self.bytes = Counter("dynamo_component_kv_transfer_bytes", "KV bytes handed over (prefill: staged for "
                             "decode; decode: received)", ("transport", "direction"), registry=registry)
        self.seconds = Histogram("dynamo_component_kv_transfer_seconds", "KV pull time on the decode worker",
                                 ("transport",), registry=registry,
                                 buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.failures = Counter("dynamo_component_kv_transfer_failures", "KV pulls that failed (recomputed)",
                                ("transport",), registry=registry)

    def annotate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Prefill side: the transfer parameters as returned to the frontend."""
        params = dict(params)
        params.setdefault("transport", self.setup.transport)
        if "kv_bytes" not in params:
            params["kv_bytes"] = _num_blocks(params.get("remote_block_ids")) * self.bytes_per_block
        self.bytes.labels(self.setup.transport, "sent").inc(params["kv_bytes"])
        return params

    def observe_connector_stats(self, data: dict[str, Any]) -> None:
        """Decode side: vLLM connector stats (NIXL's and ours share these keys)."""
        t = self.setup.transport
        for nbytes in data.get("bytes_transferred") or ():
            self.bytes.labels(t, "received").inc(nbytes)
        for seconds in data.get("transfer_duration") or ():
            self.seconds.labels(t).observe(seconds)
        failed = sum(len(data.get(k) or ()) for k in ("num_failed_transfers", "num_failed_handshakes"))
        if failed:
            self.failures.labels(t).inc(failed)

    def stat_logger_factory(self) -> Callable[..., Any]:
        from vllm.v1.metrics.loggers import StatLoggerBase

        metrics = self

        class TransferStatLogger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                       engine_idx: int = 0) -> None:
                data = getattr(scheduler_stats, "kv_connector_stats", None)
                if data:
                    metrics.observe_connector_stats(data)

            def log_engine_initialized(self) -> None:
                pass

        return TransferStatLogger


def _num_blocks(block_ids: Any) -> int:
    if not block_ids:
        return 0
    if isinstance(block_ids[0], (list, tuple)):  # per KV cache group (NIXL with HMA)
        return sum(len(g) for g in block_ids)
    return len(block_ids)


def log_setup(setup: DisaggSetup, mode: WorkerRole) -> None:
    log.info("disaggregation: %s worker, KV transport %s (connector %s; %s)", mode, setup.transport,
             setup.connector, setup.reason)


# ---- the three calls the worker's lifecycle (`dynamo.vllm.__main__`) makes ----

def setup_worker(engine_args: Any, config: Any, registry: CollectorRegistry) -> TransferMetrics | None:
    """Before the engine starts: connector config, log line and metrics (None: aggregated)."""
    setup = configure(engine_args, config.mode, config.kv_transfer_backend, config.discovery_backend)
    if setup is None:
        return None
    log_setup(setup, config.mode)
    return TransferMetrics(registry, setup, bytes_per_block=0)


def stat_loggers(xfer: TransferMetrics | None) -> list[Any]:
    return [xfer.stat_logger_factory()] if xfer is not None else []


def params_hook(xfer: TransferMetrics | None, engine: Any, mode: WorkerRole) -> Callable[[dict], dict] | None:
    """Once the engine is up: the prefill handler's annotation of its transfer parameters."""
    if xfer is None or mode != WorkerRole.PREFILL:
        return None
    try:
        xfer.bytes_per_block = kv_bytes_per_block(engine.vllm_config)
    except Exception as exc:  # an exotic model config: report 0 bytes rather than fail the worker
        log.warning("cannot compute KV bytes per block: %s", exc)
    return xfer.annotate

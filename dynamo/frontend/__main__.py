"""`python -m dynamo.frontend`: the OpenAI-compatible HTTP frontend (and, with --kserve-grpc-server, the
KServe v2 gRPC one, `kserve.py`). Its HTTP port is bound here, or inherited (LISTEN_FDS, `runtime/listen_fds.py`:
`python -m dynamo.deploy run` hands every replica of a frontend service the socket the service owns), which
changes what SIGTERM does (`_drain` / `_hand_off`)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from pathlib import Path
from typing import Callable, Sequence

from dynamo.frontend.config import FrontendConfig, parse_frontend_args
from dynamo.frontend.disagg import DisaggMetrics, DisaggPolicy, PrefillOrchestrator
from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.batch_api import BatchApi, BatchCollector
from dynamo.frontend.replicas import Replicas
from dynamo.frontend.responses_store import ResponseStore
from dynamo.frontend.http_app import FrontendApp
from dynamo.frontend.messages_run import AnthropicApi
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_defaults import ModelDefaults
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.worker_sets import SetRouting
from dynamo.llm.token_cache import TokenCache
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import PolicyHost, Role, RoutingPolicy, create_policy
from dynamo.router.session_affinity import with_session_affinity
from dynamo.runtime.asgi import BindError, EmbeddedHttpServer

from dynamo.runtime.config_dump import write_config_dump
from dynamo.runtime.distributed import DistributedRuntime, advertise_host
from dynamo.runtime.http_limits import HttpGuardCollector
from dynamo.runtime.listen_fds import Inherited, inherited_sockets
from dynamo.runtime.logs import RequestEvents
from dynamo.runtime.loop_monitor import LoopLagMonitor
from dynamo.runtime.memory import pin_mmap_threshold
from dynamo.runtime.process import Stop, run_main

log = logging.getLogger("dynamo.frontend")


def _on_change(policy: RoutingPolicy, metrics: FrontendMetrics, live_workers: Callable[[], set[int]],
               listed: Callable[[], None], sets: SetRouting | None = None):
    def update(entry) -> None:
        for role in Role:
            policy.on_membership_change(entry.pool(role))
        if sets is not None:
            sets.prune(entry)  # the series of worker sets that are gone (a rollout that finished, a model gone)
        metrics.keep_workers(live_workers())
        listed()
    return update


def _set_routing(config: FrontendConfig, metrics: FrontendMetrics, inhibitor: Inhibitor) -> SetRouting:
    """Each request's worker set (`worker_sets.py`): one for the dispatcher and the prefill orchestrator."""
    return SetRouting(counter=metrics.worker_set_requests, inhibitor=inhibitor,
                      enforce_disagg=config.enforce_disagg or not config.decode_fallback)


def _app(config: FrontendConfig, runtime: DistributedRuntime, metrics: FrontendMetrics, routing: RoutingPolicy,
         models: ModelManager, replicas: Replicas, inhibitor: Inhibitor, sets: SetRouting) -> FrontendApp:
    """The HTTP app over its request path: dispatch (migration, inhibition, deadlines, worker sets) and
    disaggregation."""
    deadlines = config.deadlines()
    disagg = DisaggPolicy.from_config(config.enforce_disagg or not config.decode_fallback, config.router_conditional_disagg,
                                      config.router_conditional_disagg_config)
    orchestrator = PrefillOrchestrator(runtime.client, routing, disagg,
                                       DisaggMetrics(metrics.registry, config.metrics_prefix), deadlines,
                                       metrics.stages, inhibitor, sets=sets)
    dispatcher = Dispatcher(runtime.client, routing, config.migration_limit, metrics, orchestrator, inhibitor,
                            deadlines, config.migration_max_seq_len, sets=sets)
    app = FrontendApp(models, dispatcher, metrics, body_limit=int(config.http_body_limit_mb * 1024 * 1024),
                       concurrency_limit=config.rejection_frontend_request_concurrency_limit,
                       overload_status=config.http_overload_status_code,
                       health_extra=lambda: {**routing.health(), **inhibitor.health()},
                       reasoning_field=config.reasoning_field_name,
                       request_events=RequestEvents(runtime.settings.logging_jsonl),
                       admin_api=not config.disable_frontend_admin_api,
                       anthropic=AnthropicApi(config.strip_anthropic_preamble) if config.enable_anthropic_api else None,
                       stream_dispatch=(config.enable_streaming_tool_dispatch,
                                        config.enable_streaming_reasoning_dispatch),
                       responses_store=_shared(ResponseStore(int(config.responses_store_mb * (1 << 20))), replicas)
                       if config.responses_store_mb > 0 else None,
                       wait_for_workers=config.wait_for_workers_secs, media_policy=config.media_policy())
    if config.batch_store_mb > 0:  # OpenAI's Files and Batch APIs, each request through the app itself
        batches = BatchApi(app, int(config.batch_store_mb * (1 << 20)), config.batch_concurrency,
                           Path(config.batch_dir) if config.batch_dir else None)
        _shared(batches.files, replicas)
        replicas.restored |= batches.restored_tags()
        batches.resume(lambda model: (entry := models.get(model)) is not None and bool(entry.decode_workers()))
        metrics.registry.register(BatchCollector(config.metrics_prefix, batches))
        app.routes.update(batches.routes())
        app.prefix_routes.extend(batches.prefix_routes())
        app.on_close.append(batches.close)
    app.stream_backlog_mb = config.http_stream_backlog_limit_mb
    app.on_close.append(replicas.close)
    moved_routes(app.routes, runtime.settings)
    return app


def _shared(store, replicas: Replicas):
    """A store whose ids name this replica, and whose misses its peers may hold (replicas.py)."""
    store.tag, store.peers = replicas.tag, replicas
    return store


def _http_url(config: FrontendConfig, runtime: DistributedRuntime, port: int) -> str:
    """Where the other replicas reach this one's HTTP port."""
    host = config.http_host
    if host in ("0.0.0.0", "::", ""):
        host = advertise_host(runtime.store.backend, runtime.settings)[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def moved_routes(routes: dict, settings) -> None:
    """Dynamo's DYN_HTTP_SVC_*_PATH: a route served at another path (probes, gateways and clients
    written for it find it there), and no longer at its default."""
    for method, default, path in (("GET", "/health", settings.http_svc_health_path),
                                  ("GET", "/live", settings.http_svc_live_path),
                                  ("POST", "/v1/chat/completions", settings.http_svc_chat_path),
                                  ("POST", "/v1/completions", settings.http_svc_cmp_path),
                                  ("POST", "/v1/embeddings", settings.http_svc_emb_path),
                                  ("POST", "/v1/rerank", settings.http_svc_rerank_path),
                                  ("GET", "/v1/models", settings.http_svc_models_path)):
        if path != default:
            routes[(method, path)] = routes.pop((method, default))


def _tls_options(config: FrontendConfig) -> dict:
    tls: dict = {}
    if config.tls_cert_path:
        tls = {"ssl_certfile": config.tls_cert_path, "ssl_keyfile": config.tls_key_path}
    if config.tls_client_ca_cert_path:  # mutual TLS: no certificate from this CA, no handshake
        tls.update(ssl_ca_certs=config.tls_client_ca_cert_path, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return tls


async def serve(config: FrontendConfig, stop: Stop, warnings: Sequence[str] = ()) -> int:
    for text in warnings:  # the Dynamo flags accepted without effect, now that logging is set up
        log.warning("%s", text)
    pin_mmap_threshold()
    inherited = _inherited(config)  # before anything registers: a wrong LISTEN_FDS stops it with one line
    runtime = await DistributedRuntime.create(config.discovery_backend, config.namespace or "dynamo")
    metrics = FrontendMetrics(config.metrics_prefix)
    # one policy for decode and prefill pools
    routing = with_session_affinity(create_policy(config.router_mode, config),
                                    config.router_session_affinity_ttl_secs, config.router_session_affinity_mode)
    await routing.attach(PolicyHost(runtime.store, runtime.client, runtime.instance_id, metrics.registry,
                                    config.metrics_prefix, config.event_plane))
    inhibitor = Inhibitor(config.inhibited_duration_secs, metrics.registry, config.metrics_prefix)
    sets = _set_routing(config, metrics, inhibitor)
    models = _models(config, runtime, metrics, routing, sets)
    replicas = Replicas(runtime.store, runtime.namespace, runtime.instance_id, metrics.registry, config.metrics_prefix)
    app = _app(config, runtime, metrics, routing, models, replicas, inhibitor, sets)
    lag = LoopLagMonitor(lambda v: (metrics.loop_lag.observe(v), metrics.loop_lag_max.set(lag.worst)))
    lag.start()
    tls = _tls_options(config)
    # --kserve-grpc-server: gRPC on the frontend's port, the HTTP app beside it (Dynamo's layout)
    http_port = config.grpc_metrics_port if config.kserve_grpc_server else config.http_port
    http = EmbeddedHttpServer(app, config.http_host, http_port, limits=config.http_limits(),
                              sockets=[s.sock for s in inherited], **tls)
    metrics.registry.register(HttpGuardCollector(config.metrics_prefix, http.guard))
    await models.start()
    if inherited:
        await _catch_up(models)
    starting = _initial_workers(config, app, models)
    port = http_port
    try:
        await http.start()
        port = config.http_port
        grpc_server = _kserve(config, app)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.http_host, port, exc)
        await http.stop(timeout=1.0)
        await _close(lag, routing, models, runtime, starting)
        return 1
    scheme = "https" if tls else "http"
    if not tls:  # replicas forward stored-object requests here (an HTTPS one would need their client certificate)
        own = next((s.port for s in inherited if s.name == "replica"), http.port)  # a shared socket reaches any
        await replicas.register(runtime, _http_url(config, runtime, own))
    where = ", ".join(f"{s.name} {s.sock.getsockname()[0]}:{s.port}" for s in inherited)
    log.info("frontend ready on %s://%s:%d%s (router %s, discovery %s)", scheme, config.http_host, http.port,
             f" (inherited sockets: {where})" if where else "", config.router_mode, runtime.store.backend)
    if grpc_server is not None:
        await grpc_server.start()
        log.info("KServe gRPC frontend ready on %s:%d (TLS %s)", config.http_host, grpc_server.port,
                 "on" if tls else "off")
    stop.takes_second = True  # a second signal ends the streams the drain lets finish (_drain)
    await stop.wait()
    if inherited:
        await _hand_off(app, http, stop, runtime.settings.runtime_graceful_shutdown_timeout_secs, replicas)
    else:
        await _drain(config, app, http, grpc_server, stop, runtime.settings.runtime_graceful_shutdown_timeout_secs,
                     replicas)
    await _close(lag, routing, models, runtime, starting)
    return 0


def _models(config: FrontendConfig, runtime: DistributedRuntime, metrics: FrontendMetrics,
            routing: RoutingPolicy, sets: SetRouting | None = None) -> ModelManager:
    """The models discovery announces, each with its workers (membership changes reach the routing policy)."""
    token_cache = TokenCache(config.tokenizer_cache_bytes) if config.tokenizer_cache_bytes else None
    if token_cache is not None:
        metrics.watch_token_cache(token_cache)
    models = ModelManager(runtime.store, config.namespace,
                          on_change=_on_change(routing, metrics, lambda: models.worker_ids(),
                                               lambda: runtime.client.listed(models.worker_addresses()), sets),
                          block_size=config.kv_cache_block_size, namespace_prefix=config.namespace_prefix,
                          token_cache=token_cache, defaults=ModelDefaults.of(config),
                          observe_prep=metrics.stages.prep, card_settle=config.model_card_settle_secs,
                          on_card_switch=lambda name: metrics.card_switches.labels(name).inc())
    expected = config.model_name or config.model_path
    if config.wait_for_workers_secs and expected:  # its requests wait even before a worker registers it
        models.expected.add(expected)
    return models


def _inherited(config: FrontendConfig) -> list[Inherited]:
    """The listening sockets handed down for the HTTP port (LISTEN_FDS: `run` hands one to every replica of a
    frontend service), served instead of binding it. A KServe frontend's --http-port is its gRPC server's, which
    cannot take one: they are closed unused there, said once. BindError (one line, exit 3): LISTEN_FDS names
    descriptors that are not listening sockets."""
    try:
        found = inherited_sockets(config.listen_fds, config.listen_pid, config.listen_fdnames)
    except (ValueError, OSError) as exc:
        raise BindError(f"LISTEN_FDS={config.listen_fds}: {exc}") from None
    if found and config.kserve_grpc_server:
        log.warning("LISTEN_FDS: %d inherited socket(s) left unused: a KServe gRPC frontend binds its ports itself",
                    len(found))
        for inherited in found:
            inherited.sock.close()
        return []
    return found


# How long a frontend on an inherited socket waits for the models discovery already holds before it serves.
CATCH_UP_SECS = 30.0


async def _catch_up(models: ModelManager) -> None:
    """On a socket other replicas share, accepting is serving their clients: take in the models and workers
    discovery holds first (a rollout's new replica must not answer "model does not exist" for what the old one
    serves). Nothing there (a graph's first start): no wait."""
    if not await models.caught_up(CATCH_UP_SECS):
        log.warning("the models discovery holds were not all loaded within %.0f s: serving anyway", CATCH_UP_SECS)


def _kserve(config: FrontendConfig, app: FrontendApp):
    """The KServe gRPC server on --http-port (listening, not yet serving), or None without the flag."""
    if not config.kserve_grpc_server:
        return None
    from dynamo.frontend.kserve import KServeServer  # grpcio is loaded only where it is used

    tls = None
    if config.tls_cert_path:
        with open(config.tls_key_path or "", "rb") as key, open(config.tls_cert_path, "rb") as cert:
            tls = (key.read(), cert.read())
    client_ca = None
    if config.tls_client_ca_cert_path:
        with open(config.tls_client_ca_cert_path, "rb") as ca:
            client_ca = ca.read()
    return KServeServer(app, config.http_host, config.http_port, int(config.http_body_limit_mb * 2**20), tls,
                        client_ca, write_timeout=config.http_write_timeout_secs)


def _initial_workers(config: FrontendConfig, app: FrontendApp, models: ModelManager) -> asyncio.Task | None:
    """`--router-min-initial-workers N`: HTTP serves from the start (/live 200, /health says what it waits
    for: Kubernetes' liveness probe must not restart a frontend whose engines take long to load), generation
    requests get 503 until N workers are up (admission.InitialWorkers); this task logs when they are."""
    want = config.router_min_initial_workers
    if not want:
        return None
    initial = app.admission.await_initial_workers(want)
    log.info("waiting for %d worker(s) before serving requests (/live and /health answer meanwhile)", want)
    return asyncio.create_task(models.wait_for(initial.check, timeout=float("inf")))


# Once the requests in flight are ended (a second signal, or the drain's bound), how long they get to send
# their `shutting_down` error before the server stops.
SHUTDOWN_FLUSH_SECS = 1.0


async def _drain(config: FrontendConfig, app: FrontendApp, http: EmbeddedHttpServer, grpc_server, stop: Stop,
                 bound: float, replicas: Replicas) -> None:
    """Drain as NVIDIA Dynamo 1.6.1 does: at once /health 503 (/live 200) and new requests 503; after
    DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS the listening sockets close (a new connection is refused, so the
    load balancer moves on) while admitted streams run on to their end, and the process exits after the last.
    Kubernetes' SIGKILL at terminationGracePeriodSeconds is what normally bounds that; without one, `bound`
    (DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS, counted from the signal) does. A second signal (`stop.now`)
    or that bound ends them with a `shutting_down` error."""
    window = config.http_graceful_shutdown_timeout_secs
    bound = max(window, bound)
    admission = app.admission
    admission.begin_drain()
    log.info("draining %d request(s) in flight: new requests refused", admission.inflight)
    drained = await admission.drained(window, unless=stop.now)
    grpc_stop = None
    if not drained and not stop.now.is_set():
        log.warning("Timed out waiting for inflight inference requests to drain: %d request(s) in flight run on to "
                    "their end (at most %.0f s more; a second SIGTERM ends them now); no longer accepting "
                    "connections", admission.inflight, bound - window)
        http.stop_listening()
        await replicas.leave()  # its peers stop forwarding stored-object requests to the closed port
        if grpc_server is not None:  # stops taking RPCs; the admitted ones run on, within the same bound
            grpc_stop = asyncio.create_task(grpc_server.stop(bound - window + SHUTDOWN_FLUSH_SECS))
        drained = await admission.drained(bound - window, unless=stop.now)
    await _end_unfinished(app, stop, drained, bound)
    await http.stop(timeout=1.0)
    await _stop_grpc(grpc_server, grpc_stop)
    await app.close()


async def _hand_off(app: FrontendApp, http: EmbeddedHttpServer, stop: Stop, bound: float, replicas: Replicas) -> None:
    """SIGTERM on inherited sockets: the replicas sharing them (the one replacing this one among them) take new
    connections from the same kernel queue, so unlike `_drain` there is no window to wait out (no load balancer's
    endpoint list has to catch up, and a 503 would only fail a request another replica serves). At once: stop
    accepting, and retire the open connections (`EmbeddedHttpServer.retire_connections`): each closes after its
    next answer (`Connection: close`), or, idle, once quiet for a moment, so that their clients reconnect through
    the shared socket without a request already sent being dropped. Admitted streams run on to their end, and the
    connections close, within `bound` (DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS from the signal; Kubernetes'
    or run's SIGKILL; a second signal)."""
    admission = app.admission
    loop = asyncio.get_running_loop()
    end = loop.time() + bound
    http.stop_listening()
    http.retire_connections()
    log.info("handing off: no longer accepting on the inherited socket(s); %d request(s) in flight run on to "
             "their end", admission.inflight)
    await replicas.leave()  # its peers stop forwarding stored-object requests to it
    drained = await admission.drained(bound, unless=stop.now)
    await _end_unfinished(app, stop, drained, bound)
    if not await http.connections_closed(max(0.0, end - loop.time()), unless=stop.now):
        log.warning("handing off: %d connection(s) still open at the drain's bound: closed",
                    len(http.guard.connections))
    await http.stop(timeout=1.0)
    await app.close()


async def _end_unfinished(app: FrontendApp, stop: Stop, drained: bool, bound: float) -> None:
    """Requests still in flight once the drain's bound passed or a second signal came end with a shutting_down
    error (not as a lost worker), with a moment to send it."""
    if drained:
        return
    admission = app.admission
    why = "second signal" if stop.now.is_set() else f"drain bound ({bound:.0f} s) passed"
    log.warning("%s: ending %d request(s) in flight", why, admission.inflight)
    app.dispatcher.shut_down()
    await admission.drained(SHUTDOWN_FLUSH_SECS)


async def _stop_grpc(grpc_server, stopping: asyncio.Task | None) -> None:
    if grpc_server is None:
        return
    if stopping is None:
        await grpc_server.stop(1.0)
        return
    try:
        await asyncio.wait_for(stopping, SHUTDOWN_FLUSH_SECS + 1.0)
    except asyncio.TimeoutError:  # wait_for cancelled the graceful stop, which leaves its calls open: end them
        log.warning("the KServe gRPC server did not stop in time; ending its calls")
        await grpc_server.stop(0)


async def _close(lag: LoopLagMonitor, routing: RoutingPolicy, models: ModelManager,
                 runtime: DistributedRuntime, starting: asyncio.Task | None = None) -> None:
    if starting is not None:
        starting.cancel()
    await lag.stop()
    await routing.close()
    await models.stop()
    await runtime.shutdown()


def main(argv: list[str] | None = None) -> int:
    config, warnings = parse_frontend_args(argv)
    write_config_dump(config, "dynamo.frontend")
    return run_main(lambda stop: serve(config, stop, warnings))


if __name__ == "__main__":
    sys.exit(main())

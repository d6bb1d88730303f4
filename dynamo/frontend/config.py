"""Frontend configuration: Dynamo's flag names with `DYN_*` env twins.

The HTTP limits (`DYN_HTTP_BODY_LIMIT_MB`, ...) are env-only in NVIDIA Dynamo; here they are
fields too, so `--help` lists them and `dump_config` shows them, under the same variable names."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from dynamo.llm.media import MediaSettings
from dynamo.llm.worker_client import StreamDeadlineSettings
from dynamo.router.config import ROUTER_MODES, Bound, KvRouterConfig, check_bounds, check_finite, setting_name
from dynamo.router.session_affinity import MAX_TTL_SECS
from dynamo.frontend.client_backlog import STREAM_BACKLOG_MB
from dynamo.frontend.compat_flags import (ADMISSION_CONTROL_CHOICES, ADMISSION_CONTROL_ENV,
                                          ADMISSION_CONTROL_ENV_WARNING, FRONTEND_FLAGS)
from dynamo.frontend.model_defaults import check_model_defaults
from dynamo.frontend.model_generations import CARD_SETTLE_SECS
from dynamo.runtime.compat_args import compat_parser, parse_with_compat
from dynamo.runtime.config import setting
from dynamo.runtime.config_dump import DumpConfigTo
from dynamo.runtime.http_limits import HttpLimitSettings
from dynamo.runtime.settings import discovery_backend_setting, event_plane_setting


@dataclass
class FrontendConfig(KvRouterConfig, StreamDeadlineSettings, MediaSettings, HttpLimitSettings, DumpConfigTo):
    """OpenAI-compatible HTTP frontend: discovers workers, tokenizes, routes, detokenizes."""

    http_host: str = setting("0.0.0.0", "HTTP listen address")
    # DYNAMO_PORT is what the Dynamo operator injects for the frontend's port.
    http_port: int = setting(8000, "HTTP listen port", env=("DYN_HTTP_PORT", "DYNAMO_PORT"))
    http_body_limit_mb: float = setting(192.0, "Largest request body in MiB; larger ones get 413")
    http_stream_backlog_limit_mb: float = setting(
        STREAM_BACKLOG_MB, "Worker output in MiB (as the workers send it) one request may hold undelivered while "
        "its client does not keep up reading the response; past it the request is cancelled at its workers and "
        "its stream ends with an error event")
    kserve_grpc_server: bool = setting(False, "Serve the KServe v2 gRPC API (Triton's clients) on --http-port, for "
                                       "models served by completions; the HTTP routes move to --grpc-metrics-port")
    grpc_metrics_port: int = setting(8788, "With --kserve-grpc-server: the HTTP port (/metrics, /health, OpenAI "
                                     "routes)")
    http_overload_status_code: int = setting(529, "HTTP status of a request refused for overload")
    http_graceful_shutdown_timeout_secs: float = setting(
        5.0, "Seconds after SIGTERM the frontend keeps its port open (new requests 503) waiting for admitted "
        "requests; then it stops listening and those still running go on to their end, as in NVIDIA Dynamo "
        "(bounded by DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS from the signal, Kubernetes' SIGKILL, or a second "
        "signal, which ends them with a shutting_down error)")
    # systemd's socket activation (sd_listen_fds(3)), env-only as systemd sets it: `python -m dynamo.deploy run`
    # hands every replica of a frontend service the one listening socket the service owns, so that a rollout
    # can start the new replica on it before the old one goes (runtime/listen_fds.py).
    listen_fds: int | None = setting(None, "Listening sockets inherited at file descriptors 3.. (systemd's "
                                     "socket activation): HTTP is served on them instead of binding --http-port, "
                                     "and SIGTERM stops accepting at once (no 503 window: whoever shares the "
                                     "sockets takes the new connections)", env="LISTEN_FDS", flag=False)
    listen_pid: int | None = setting(None, "The pid the LISTEN_FDS sockets are meant for (another process ignores "
                                     "them)", env="LISTEN_PID", flag=False)
    listen_fdnames: str | None = setting(None, "Names of the LISTEN_FDS sockets, colon-separated; other replicas "
                                         "reach this one at the socket named `replica`, else the first",
                                         env="LISTEN_FDNAMES", flag=False)
    tls_cert_path: str | None = setting(None, "TLS certificate (PEM); needs --tls-key-path")
    tls_key_path: str | None = setting(None, "TLS private key (PEM); needs --tls-cert-path")
    tls_client_ca_cert_path: str | None = setting(None, "Require clients to present a certificate signed by this CA "
                                                        "(PEM; mutual TLS); needs --tls-cert-path")
    namespace: str | None = setting(None, "Serve only workers of this namespace (default: all)")
    namespace_prefix: str | None = setting(None, "Serve only workers of namespaces starting with this (wins over "
                                                 "--namespace)")
    router_mode: str = setting("round-robin", "Worker selection: kv (KV-cache aware), round-robin, random, "
                                              "least-loaded (fewest in flight), power-of-two (the less loaded of "
                                              "two random workers), direct (the request names its worker), "
                                              "device-aware-weighted (least-loaded here)", choices=ROUTER_MODES)
    router_session_affinity_ttl_secs: float | None = setting(
        None, "Keep an agent session (x-dynamo-session-id, or a coding agent's session header) on one worker "
        "until it has been idle this long (1-31536000 s; unset: only sessions whose client asks for it in "
        "nvext.session_control are kept)")
    router_session_affinity_mode: str = setting(
        "hard", "How a session's binding routes: hard (always its worker; it waits while that worker is busy), "
        "soft (its worker unless busy, else routed freely and rebound)", choices=["hard", "soft"])
    discovery_backend: str = discovery_backend_setting()
    # Dynamo's choices; ours is always direct TCP (frontend and workers alike), so `nats` changes nothing.
    request_plane: str = setting("tcp", "Request plane: always direct TCP here (nats is accepted, with a warning)",
                                 choices=["tcp", "nats"])
    event_plane: str | None = event_plane_setting()
    kv_cache_block_size: int | None = setting(None, "Override the KV block size from the model card")
    # The stream deadlines (StreamDeadlineSettings): a stream that misses one is treated as a
    # lost worker (migrated within --migration-limit, else 504 or an SSE error event).
    migration_limit: int = setting(0, "Times a request may move to another worker when its worker fails")
    migration_max_seq_len: int | None = setting(None, "Do not migrate a request past this many prompt + generated "
                                                      "tokens (its client gets the error instead)")
    model_card_settle_secs: float = setting(
        CARD_SETTLE_SECS, "A rolling update's other model card takes a model over only once its workers have "
        "outnumbered the served card's for this long, and not within this long of the last switch (a crash-looping "
        "generation does not flip the card, and the KV router's index, back and forth; a switch back to the card "
        "just left waits twice as long each time, up to 60 s); at once when no worker of the served card can answer")
    model_name: str | None = setting(None, "Models come from discovery; with --wait-for-workers-secs this one is "
                                           "known before any worker registers it: listed, its requests wait (a "
                                           "frontend that starts while its workers are scaled to zero)")
    model_path: str | None = setting(None, "Accepted for compatibility (models come from discovery); stands for "
                                           "--model-name when that is not given")
    metrics_prefix: str = setting("dynamo_frontend", "Prefix of the frontend's metric names")
    router_min_initial_workers: int = setting(0, "Serve generation requests once this many workers are up (503 "
                                                 "with Retry-After before; /live and /health answer from the start)")
    wait_for_workers_secs: float = setting(
        0.0, "A request for a model whose workers are all gone (scaled to zero, restarting) waits up to this "
        "long for one instead of a 503 at once; the model stays listed meanwhile and held requests count in "
        "dynamo_frontend_queued_requests, the demand an autoscaler scales it up from zero on (0: off)")
    enforce_disagg: bool = setting(False, "Fail requests (503) instead of prefilling locally when prefill "
                                          "workers are unavailable")
    decode_fallback: bool = setting(True, "Prefill on the decode worker when no prefill worker is available "
                                          "(--no-decode-fallback is --enforce-disagg, as in NVIDIA Dynamo)")
    router_conditional_disagg: bool = setting(False, "Prefill locally when the prompt is short or the prefill "
                                                     "pool is saturated")
    router_conditional_disagg_config: dict | None = setting(
        None, 'JSON policy, e.g. {"eff_isl_threshold": 2048, "max_inflight_prefills_per_worker": 4}')
    rejection_frontend_request_concurrency_limit: int = setting(
        0, "Refuse requests beyond this many in flight (0: no limit)")
    tokenizer_cache_bytes: int = setting(
        128 << 20, "Bytes of tokenized prompt pieces (system prompts, earlier turns) kept to tokenize repeated "
        "prompts only where they are new (0: off)")
    disable_frontend_admin_api: bool = setting(
        False, "Leave out the admin API (GET/POST /busy_threshold: live busy-threshold changes); its routes answer 404",
        env="DYN_DISABLE_FRONTEND_ADMIN_API")
    reasoning_field_name: str = setting("reasoning_content", "Message field that carries parsed reasoning",
                                        choices=["reasoning_content", "reasoning"])
    responses_store_mb: float = setting(
        256, "Memory for stored Responses (`store`, as OpenAI keeps them), so that previous_response_id continues "
        "a conversation and GET/DELETE /v1/responses/{id} work; least recently used go first (0: none stored)")
    batch_store_mb: float = setting(
        1024, "Memory for OpenAI's Files and Batch APIs (/v1/files, /v1/batches): batch input files and the output "
        "files batches write, all together (0: the Batch API is not served)")
    batch_dir: str | None = setting(
        None, "Folder (a persistent volume) where the Batch API keeps its files and batches: a restart reads them "
        "back and batches it interrupted run on (default: memory only, a restart loses them)")
    batch_concurrency: int = setting(
        16, "Requests of batches in flight at once, all batches together (the rest of the deployment's capacity "
        "stays with interactive traffic)")
    enable_anthropic_api: bool = setting(False, "Serve Anthropic's Messages API: POST /v1/messages and "
                                         "/v1/messages/count_tokens (Claude Code and other Anthropic clients)")
    enable_streaming_tool_dispatch: bool = setting(False, "Streamed chat: an `event: tool_call_dispatch` for each "
                                                   "tool call as soon as its arguments are complete, before "
                                                   "the answer ends")
    enable_streaming_reasoning_dispatch: bool = setting(False, "Streamed chat: one `event: reasoning_dispatch` "
                                                        "with the whole reasoning block once it ends")
    # NVIDIA Dynamo's `--dyn-chat-processor vllm|sglang` frontends take the engine's own parser and
    # template flags; here they are defaults for models whose workers name none (model_defaults.py).
    tool_call_parser: str | None = setting(None, "Tool-call parser for models whose workers name none (vLLM/SGLang "
                                                 "names: hermes, llama3_json, mistral, pythonic, openai, ...)",
                                           env=False)
    reasoning_parser: str | None = setting(None, "Reasoning parser for models whose workers name none (qwen3, "
                                                 "deepseek_r1, openai_gptoss, ...)", env=False)
    chat_template: str | None = setting(None, "Chat template (a Jinja file, or the template itself) for models whose "
                                              "workers set no --custom-jinja-template", env=False)
    # On by default, as in NVIDIA Dynamo 1.6.1: the line is billing metadata, not instructions for the model.
    strip_anthropic_preamble: bool = setting(True, "Drop Claude Code's x-anthropic-billing-header line from "
                                             "/v1/messages system prompts: it changes per request and defeats "
                                             "prefix caching (--no-strip-anthropic-preamble keeps it)")

    def routes_by_kv(self) -> bool:
        return self.router_mode == "kv" or self.load_aware  # --load-aware implies kv routing (validate)

    def validate(self) -> None:
        super().validate()
        check_finite(self)  # every float setting, those of the parts it embeds (media, deadlines) too
        check_bounds(self, FRONTEND_BOUNDS)
        if self.load_aware:
            self.router_mode = "kv"  # Dynamo's preset is KV routing without cache credit
        check_ports(self)
        check_tls_files(self)
        if self.responses_store_mb < 0:
            raise ValueError("--responses-store-mb must be >= 0")
        if self.migration_limit < 0:
            raise ValueError("--migration-limit must be >= 0")
        if self.migration_max_seq_len is not None and self.migration_max_seq_len < 1:
            raise ValueError("--migration-max-seq-len must be >= 1")
        self.check_deadlines()
        self.media_policy()  # ValueError for a limit that is not positive
        if self.kv_cache_block_size is not None and self.kv_cache_block_size <= 0:
            raise ValueError("--kv-cache-block-size must be positive")
        if self.http_body_limit_mb <= 0:
            raise ValueError("--http-body-limit-mb must be positive")
        if self.http_stream_backlog_limit_mb <= 0:
            raise ValueError("--http-stream-backlog-limit-mb must be positive")
        self.check_http_limits()  # the connection limits (HttpLimitSettings)
        if not 100 <= self.http_overload_status_code <= 599:
            raise ValueError("--http-overload-status-code must be an HTTP status (100-599)")
        ttl = self.router_session_affinity_ttl_secs
        if ttl is not None and not 1 <= ttl <= MAX_TTL_SECS:
            raise ValueError(f"--router-session-affinity-ttl-secs must be from 1 to {MAX_TTL_SECS}")
        if self.tokenizer_cache_bytes < 0:
            raise ValueError("--tokenizer-cache-bytes must be >= 0")
        check_model_defaults(self)
        if self.wait_for_workers_secs < 0:
            raise ValueError("--wait-for-workers-secs must be >= 0")
        if self.http_graceful_shutdown_timeout_secs < 0:
            raise ValueError("--http-graceful-shutdown-timeout-secs must be >= 0")
        if not self.model_card_settle_secs >= 0:  # NaN too
            raise ValueError("--model-card-settle-secs must be >= 0")


def check_ports(config: FrontendConfig) -> None:
    """ValueError for a port no socket can have (a bigger one would wrap around to another port)."""
    for name in ("http_port", "grpc_metrics_port"):
        if not 0 <= getattr(config, name) <= 65535:
            raise ValueError(f"{setting_name(config, name)} must be a TCP port, 0-65535 (got {getattr(config, name)})")


def check_tls_files(config: FrontendConfig) -> None:
    """ValueError for TLS settings that cannot serve: given apart, or a file that is not there (named with its
    flag, rather than failing later as a listen error)."""
    if bool(config.tls_cert_path) != bool(config.tls_key_path):
        raise ValueError("--tls-cert-path and --tls-key-path must be given together")
    if config.tls_client_ca_cert_path and not config.tls_cert_path:
        raise ValueError("--tls-client-ca-cert-path needs --tls-cert-path and --tls-key-path")
    for name in ("tls_cert_path", "tls_key_path", "tls_client_ca_cert_path"):
        path = getattr(config, name)
        if path and not os.path.isfile(path):
            raise ValueError(f"{setting_name(config, name)}: {path}: no such file")
        if path and not os.access(path, os.R_OK):
            raise ValueError(f"{setting_name(config, name)}: {path}: not readable")


# The frontend's own numeric settings with a range NVIDIA Dynamo enforces too (the router's: ROUTER_BOUNDS).
FRONTEND_BOUNDS = {"router_min_initial_workers": Bound()}


_KV_ONLY = ("active_decode_blocks_threshold", "active_prefill_tokens_threshold", "active_prefill_tokens_threshold_frac",
            "router_queue_threshold")


def _kv_only_warnings(config: FrontendConfig) -> list[str]:
    """The busy thresholds and the router queue are the KV router's: given with another --router-mode, said."""
    given = [setting_name(config, name) for name in _KV_ONLY if getattr(config, name) is not None]
    if not given or config.routes_by_kv():
        return []
    return [f"{', '.join(given)}: only --router-mode kv applies busy thresholds and the router queue; with "
            f"--router-mode {config.router_mode} they have no effect"]


def parse_frontend_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
                        ) -> tuple[FrontendConfig, list[str]]:
    """(the frontend's config, a warning per NVIDIA Dynamo flag accepted without effect): Dynamo
    flags this frontend does not act on are accepted or refused as compat_flags.py says."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    argv, engine_warning = strip_vllm_engine_args(argv, env)
    config, warnings = parse_with_compat(FrontendConfig, FRONTEND_FLAGS, argv, prog="python -m dynamo.frontend",
                                         environ=environ, vet=_vet_admission_control)
    warnings += engine_warning + config.policy_warnings() + _kv_only_warnings(config)
    if ADMISSION_CONTROL_ENV in env:
        warnings.append(ADMISSION_CONTROL_ENV_WARNING)
    if config.request_plane != "tcp":
        warnings.append(f"--request-plane {config.request_plane} is accepted for compatibility with NVIDIA Dynamo and "
                        "has no effect: requests and responses always travel over TCP between our frontend and "
                        "workers")
    return config, warnings


def _vet_admission_control(given: dict, error) -> None:
    """`--admission-control` takes Dynamo 1.6.1's choices only, as there (it is ignored either way)."""
    value = given.get("--admission-control")
    if value is not None and value not in ADMISSION_CONTROL_CHOICES:
        error(f"argument --admission-control: invalid choice: {value!r} (choose from "
              f"{', '.join(map(repr, ADMISSION_CONTROL_CHOICES))})")


CHAT_PROCESSOR_FLAG = "--dyn-chat-processor"
# Dynamo's variable for the flag. A compat flag has no config field, so no env twin of its own
# (runtime/compat_args.py); this one is read, flag first, because it switches what the command line may hold.
CHAT_PROCESSOR_ENV = "DYN_CHAT_PROCESSOR"


def strip_vllm_engine_args(argv: list[str], environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """NVIDIA Dynamo's `--dyn-chat-processor vllm` frontend parses what its own flags leave with vLLM's
    engine parser, so a manifest may pass it engine arguments (`--max-model-len`, ...). They are
    accepted here as vLLM 0.32 spells them (our static table), with a warning: the workers run the
    engine. (argv without them, the warnings); any other unknown flag stays for argparse to refuse."""
    tokens = [_Token(arg, at) for at, arg in enumerate(argv)]
    scanned = _frontend_scan(tokens)
    if scanned is None:
        return argv, []  # a malformed command line: the full parse says what is wrong with it
    given, unknown = scanned
    processor = FRONTEND_FLAGS.given(given).get(CHAT_PROCESSOR_FLAG) or environ.get(CHAT_PROCESSOR_ENV)
    if processor != "vllm" or not unknown:
        return argv, []
    names, taken = _vllm_engine_args(unknown)
    if not names:
        return argv, []
    return [arg for at, arg in enumerate(argv) if at not in taken], [
        f"vLLM engine arguments given to this --dyn-chat-processor vllm frontend have no effect here (the workers "
        f"run the engine): {', '.join(names)}"]


class _Token(str):
    """An argv token that knows its place: argparse hands back the very objects it was given, so
    what a parser left is removed where it stands, not wherever an equal string comes first."""

    at: int

    def __new__(cls, text: str, at: int) -> "_Token":
        token = super().__new__(cls, text)
        token.at = at
        return token


class _Refused(Exception):
    pass


def _refuse(message: str):
    raise _Refused(message)


def _frontend_scan(tokens: list[_Token]) -> tuple[argparse.Namespace, list[_Token]] | None:
    """The frontend's own flags in `tokens` and the tokens they leave; None where its parser refuses
    them (a bad value). Neither printing nor exiting: the full parse comes after."""
    parser = compat_parser(FrontendConfig, FRONTEND_FLAGS, add_help=False)
    parser.allow_abbrev = False  # vLLM's `--model` is its own flag, not short for our `--model-name`
    parser.error = _refuse  # type: ignore[method-assign]
    try:
        return parser.parse_known_args(tokens)
    except _Refused:
        return None


def _vllm_engine_args(unknown: list[_Token]) -> tuple[list[str], set[int]]:
    """(the vLLM engine flags given among `unknown`, sorted; the argv positions of their tokens)."""
    from dynamo.vllm import engine_flags  # a data table only: nothing of vLLM is imported
    from dynamo.worker.flag_table import add_static_flags

    engine = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_static_flags(engine, engine_flags)
    given, rest = engine.parse_known_args(unknown)
    names = sorted("--" + k.replace("_", "-") for k, v in vars(given).items() if v is not None)
    return names, {t.at for t in unknown} - {t.at for t in rest}

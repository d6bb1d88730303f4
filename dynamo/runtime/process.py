"""Process plumbing shared by every `python -m dynamo.*` entry point: logging from
`DYN_LOG` (text, or JSON lines with `DYN_LOGGING_JSONL`), uvloop, and a stop event set by
SIGTERM/SIGINT for graceful shutdown (`Stop`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Awaitable, Callable

import prometheus_client

from dynamo.runtime.logs import log_handler
from dynamo.runtime.settings import RuntimeSettings

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR, "off": logging.CRITICAL + 10}
# Dynamo's Rust targets, as the Python loggers that write the same lines here: a directive for the target
# (or, the longest that matches, one of its parents) sets these loggers' level. Another `dynamo_*` crate
# maps to `dynamo.<rest>` (dynamo_mocker -> dynamo.mocker); a Python logger name is taken as it is.
_TARGETS = {
    "dynamo_llm::http::service::metrics": ("dynamo.request",),  # "request received" / "request completed"
    "dynamo_llm::http::service::service_v2": ("dynamo.request",),  # "http response sent"
    "dynamo_llm::http": ("dynamo.request", "dynamo.frontend"),
    "dynamo_llm::kv_router": ("dynamo.router",),
    "dynamo_llm::preprocessor": ("dynamo.llm",),
    "dynamo_llm::mocker": ("dynamo.mocker",),
    "dynamo_llm": ("dynamo.frontend", "dynamo.llm", "dynamo.router", "dynamo.request"),
    "dynamo_runtime": ("dynamo.runtime",),
    "dynamo_kv_router": ("dynamo.router",),
}


def log_directives(spec: str, default: str = "info") -> tuple[int, dict[str, int]]:
    """`DYN_LOG` in Dynamo's (tracing's EnvFilter) syntax: a bare level is the default for every logger,
    `target=level` the level of that target and its children (`warn,dynamo=debug`: this project's loggers
    at debug, third-party ones at warn). As in EnvFilter, the most specific directive for a logger wins
    whatever their order (several Rust targets map to one logger). (the default level, {Python logger: level})."""
    level, chosen = _LEVELS.get(default, logging.INFO), {}
    for part in spec.split(","):
        target, _, name = part.strip().lower().rpartition("=")
        if name not in _LEVELS:
            continue
        if not target:
            level = _LEVELS[name]
            continue
        for logger in _loggers_of(target):
            if len(target) >= chosen.get(logger, (-1, 0))[0]:  # longer target: more specific
                chosen[logger] = (len(target), _LEVELS[name])
    return level, {logger: lvl for logger, (_, lvl) in chosen.items()}


def _loggers_of(target: str) -> tuple[str, ...]:
    if "::" not in target and not target.startswith("dynamo_"):
        return (target,)  # a Python logger (dynamo, dynamo.frontend, uvicorn)
    for prefix in sorted(_TARGETS, key=len, reverse=True):
        if target == prefix or target.startswith(prefix + "::"):
            return _TARGETS[prefix]
    crate = target.split("::", 1)[0]
    return (f"dynamo.{crate.removeprefix('dynamo_')}",)


def log_level_from_env(default: str = "info", settings: RuntimeSettings | None = None) -> int:
    """The default level of `DYN_LOG` (see `log_directives`).

    Reading the settings here, first thing in every entry point, also makes a malformed
    runtime variable stop the process at start-up with its name, not later mid-serve."""
    spec = (settings or RuntimeSettings.from_env()).log
    return log_directives(default if spec is None else spec, default)[0]


def configure_logging() -> None:
    settings = RuntimeSettings.from_env()
    level, loggers = log_directives(settings.log or "info")
    logging.basicConfig(level=level, handlers=[log_handler(settings.logging_jsonl)])
    for name, target_level in loggers.items():
        logging.getLogger(name).setLevel(target_level)


def _loop_factory():
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop


# After a second signal taken by the program (`Stop.takes_second`), how long it has to end what it was finishing
# and exit before the process exits regardless.
SECOND_SIGNAL_EXIT_SECS = 10.0


class Stop(asyncio.Event):
    """Set by the first SIGTERM/SIGINT: shut down gracefully. A second signal (an impatient operator, Ctrl-C
    twice) exits the process at once, unless the program set `takes_second`: then it sets `now` and the
    program ends the work its drain was letting finish, exiting within SECOND_SIGNAL_EXIT_SECS (a third
    signal, or that deadline, exits at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = asyncio.Event()
        self.takes_second = False


def run_main(main: Callable[[Stop], Awaitable[int | None]]) -> int:
    """Run `main(stop_event)` on uvloop; SIGTERM/SIGINT set the event (twice: `Stop`)."""
    configure_logging()
    # /metrics as Dynamo's exporter writes it: no per-series `_created` samples (prometheus_client adds one
    # to every counter and histogram, doubling what a dashboard built on Dynamo's series lists).
    prometheus_client.disable_created_metrics()

    async def runner() -> int | None:
        stop = Stop()
        loop = asyncio.get_running_loop()
        hits = {"n": 0}

        def on_signal(signum: int) -> None:
            hits["n"] += 1
            name = signal.Signals(signum).name
            if hits["n"] == 1:
                logging.getLogger("dynamo").info("received %s: shutting down", name)
                stop.set()
            elif hits["n"] == 2 and stop.takes_second:
                logging.getLogger("dynamo").warning("received %s again: ending the requests in flight now", name)
                stop.now.set()
                loop.call_later(SECOND_SIGNAL_EXIT_SECS, os._exit, 128 + signum)
            else:
                os._exit(128 + signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        return await main(stop)

    from dynamo.runtime.asgi import BindError
    from dynamo.runtime.discovery.base import DiscoveryUnavailable
    from dynamo.runtime.tls import TlsConfigError

    with asyncio.Runner(loop_factory=_loop_factory()) as runner_ctx:
        try:
            code = runner_ctx.run(runner())
        except (DiscoveryUnavailable, BindError, TlsConfigError) as exc:  # one line saying what to set
            logging.getLogger("dynamo").error("%s", exc)
            return 3
    return int(code or 0)

"""Process plumbing shared by every `python -m dynamo.*` entry point: logging from
`DYN_LOG` (text, or JSON lines with `DYN_LOGGING_JSONL`), uvloop, and a stop event set by
SIGTERM/SIGINT for graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Awaitable, Callable

from dynamo.runtime.logs import log_handler
from dynamo.runtime.settings import RuntimeSettings

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR, "off": logging.CRITICAL + 10}


def log_level_from_env(default: str = "info", settings: RuntimeSettings | None = None) -> int:
    """`DYN_LOG` uses RUST_LOG syntax (`info`, `dynamo=debug,warn`): take the bare level if any.

    Reading the settings here, first thing in every entry point, also makes a malformed
    runtime variable stop the process at start-up with its name, not later mid-serve."""
    spec = (settings or RuntimeSettings.from_env()).log
    spec = default if spec is None else spec
    level = default
    for part in spec.split(","):
        part = part.strip().lower()
        if part and "=" not in part:
            level = part
        elif part.startswith("dynamo=") or part.startswith("dynamo::"):
            level = part.split("=", 1)[-1]
    return _LEVELS.get(level, logging.INFO)


def configure_logging() -> None:
    settings = RuntimeSettings.from_env()
    logging.basicConfig(level=log_level_from_env(settings=settings), handlers=[log_handler(settings.logging_jsonl)])


def _loop_factory():
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop


def run_main(main: Callable[[asyncio.Event], Awaitable[int | None]]) -> int:
    """Run `main(stop_event)` on uvloop; SIGTERM/SIGINT set the event (twice: exit now)."""
    configure_logging()

    async def runner() -> int | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        hits = {"n": 0}

        def on_signal(signum: int) -> None:
            hits["n"] += 1
            if hits["n"] > 1:
                os._exit(128 + signum)
            logging.getLogger("dynamo").info("received %s: shutting down", signal.Signals(signum).name)
            stop.set()

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

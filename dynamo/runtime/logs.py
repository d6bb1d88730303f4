"""Log output: the boundary between a process's log records and what it writes to stderr.

Text by default. `DYN_LOGGING_JSONL=true` (NVIDIA Dynamo's switch, what its tracing setups and
log pipelines such as Loki expect) writes one JSON object per line instead: `time` (RFC 3339,
UTC, microseconds), `level` (`TRACE`/`DEBUG`/`INFO`/`WARN`/`ERROR`, Dynamo's spelling), `target`
(the logger), `message`, `file` and `line`, an `exception` text when there is one, and the
record's structured fields as top-level keys.

`RequestEvents` writes the request-trace lines both the frontend and the workers emit ("request
received", "request completed", ...) with Dynamo's field names (`request_id`, `trace_id`,
`model`, `endpoint`, `request_type`, `status`, `elapsed_ms`, `error_type`, `error_detail`). They are
INFO (WARN, ERROR for failed requests) in text and JSON lines alike, as Dynamo 1.6.1 writes them: a
default log has its lines per request; `DYN_LOG=info,dynamo.request=warn` leaves them out.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

# LogRecord's own attributes: anything else on a record came in through `extra` (a field).
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_LEVEL_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN", logging.ERROR: "ERROR",
                logging.CRITICAL: "ERROR"}
FIELDS = "fields"  # the `extra` key whose dict becomes top-level keys


def rfc3339(seconds: float) -> str:
    micros = int(round(seconds * 1e6))
    whole, frac = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{frac:06d}Z"


class JsonlFormatter(logging.Formatter):
    """One JSON object per record; never raises on a value json does not know (written as text)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname),
            "target": record.name,
            "message": record.getMessage(),
            "file": record.pathname,
            "line": record.lineno,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key != FIELDS:
                entry.setdefault(key, value)
        entry.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_handler(jsonl: bool) -> logging.Handler:
    """A stderr handler in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonlFormatter() if jsonl else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


class RequestEvents:
    """Request-trace lines of one process (see the module docstring for levels and fields)."""

    def __init__(self, jsonl: bool, logger: logging.Logger | None = None) -> None:
        self.jsonl = jsonl
        self.log = logger or logging.getLogger("dynamo.request")

    def enabled(self, level: int = logging.INFO) -> bool:
        """Whether an event at `level` would be written (check before building its fields)."""
        return self.log.isEnabledFor(level)

    def emit(self, level: int, message: str, **fields: Any) -> None:
        """Write one event; its `file`/`line` are those of whoever called the caller of `emit`
        (the handler that reported it, not the trace helper between)."""
        if not self.enabled(level):
            return
        if self.jsonl:
            self.log.log(level, message, extra={FIELDS: fields}, stacklevel=3)
        else:
            self.log.log(level, "%s %s", message, " ".join(f"{k}={v}" for k, v in fields.items() if v is not None),
                         stacklevel=3)

"""OpenAI's Batch API records: a batch as its API object shows it (status, timestamps, counts, usage)
and its input file checked line by line. Lifecycle, as OpenAI's: `validating` (a malformed input
fails the whole batch, its `errors` naming each bad line) -> `in_progress` -> `finalizing` ->
`completed`; `cancelling` -> `cancelled`; `expired` past the 24 h window. Running them:
batch_runner.py."""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from dynamo.frontend.intake import utf8_slices

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
WINDOW_SECS = {"24h": 24 * 3600}
MAX_LINES = 50_000  # OpenAI's limit per batch
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
STATUSES = (*ACTIVE, "completed", "failed", "expired", "cancelled")
USAGE_KEYS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")


@dataclass
class BatchLine:
    """One request of a batch: its `body` as the input file's JSON bytes (sent on as they are: no re-encoding of a
    prompt of megabytes), and the two body fields the runner reads."""

    custom_id: str
    body: bytes
    model: Any = None
    stream: Any = None


_NULL = msgspec.Raw(b"null")


class _LineShape(msgspec.Struct):
    """A line as read: its body left as raw JSON (no Python string of its prompt is built)."""

    custom_id: Any = None
    method: Any = None
    url: Any = None
    body: msgspec.Raw = _NULL


class _BodyShape(msgspec.Struct):
    model: Any = None
    stream: Any = None


_line_decoder = msgspec.json.Decoder(_LineShape)
_body_decoder = msgspec.json.Decoder(_BodyShape)


@dataclass
class Batch:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    errors: list[dict] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, int] = field(default_factory=dict)  # in_progress_at, finalizing_at, ...: when each began
    total: int = 0
    completed: int = 0
    failed: int = 0
    cancel_requested: bool = False
    model: str | None = None  # the first request's
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_KEYS, 0))
    output_expires_secs: int | None = None  # its output and error files' lifetime (None: their default)

    @property
    def expires_at(self) -> int:
        return self.created_at + WINDOW_SECS[self.completion_window]

    def object(self) -> dict:
        stamps = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
                  "cancelled_at")
        return {"id": self.id, "object": "batch", "endpoint": self.endpoint,
                "errors": None if self.errors is None else {"object": "list", "data": self.errors},
                "input_file_id": self.input_file_id, "completion_window": self.completion_window,
                "status": self.status, "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "created_at": self.created_at, "expires_at": self.expires_at,
                **{stamp: self.times.get(stamp) for stamp in stamps},
                "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
                "metadata": self.metadata, "model": self.model, "usage": self._usage()}

    def _usage(self) -> dict:
        u = self.usage
        return {"input_tokens": u["input_tokens"], "input_tokens_details": {"cached_tokens": u["cached_tokens"]},
                "output_tokens": u["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": u["reasoning_tokens"]},
                "total_tokens": u["input_tokens"] + u["output_tokens"]}

    def count(self, entry: dict) -> None:
        """One answered request (an output or error file line) in the counts and usage."""
        response = entry.get("response") or {}
        if 200 <= response.get("status_code", 0) < 300:
            self.completed += 1
            body = response.get("body")
            self.count_usage(body.get("usage") if isinstance(body, dict) else None)
        else:
            self.failed += 1

    def recount(self, results: list[dict | None]) -> None:
        """The counts and usage of these answers alone (a resumed batch's, read back)."""
        self.completed = self.failed = 0
        self.usage = dict.fromkeys(USAGE_KEYS, 0)
        for entry in results:
            if entry is not None:
                self.count(entry)

    def count_usage(self, usage: Any) -> None:
        """Add one answer's usage: chat/completions/embeddings' or the Responses API's names."""
        if not isinstance(usage, dict):
            return
        prompt = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
        output = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
        for key, value in (("input_tokens", usage.get("prompt_tokens", usage.get("input_tokens"))),
                           ("output_tokens", usage.get("completion_tokens", usage.get("output_tokens"))),
                           ("cached_tokens", prompt.get("cached_tokens")),
                           ("reasoning_tokens", output.get("reasoning_tokens"))):
            if isinstance(value, int):
                self.usage[key] += value

    def enter(self, status: str) -> None:
        self.status = status
        self.times[f"{status}_at"] = int(time.time())


def parse_lines(data: bytes, endpoint: str) -> tuple[list[BatchLine], list[dict]]:
    """The input file's requests, or the errors that fail the batch (each with its 1-based `line`)."""
    lines, errors, seen = [], [], set()
    for number, raw in enumerate(data.removeprefix(codecs.BOM_UTF8).split(b"\n"), 1):
        if not raw.strip():
            continue
        problem = _line_problem(raw, endpoint, seen)
        if isinstance(problem, BatchLine):
            lines.append(problem)
            seen.add(problem.custom_id)
        else:
            errors.append({**problem, "line": number})
            if len(errors) >= 100:
                break
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "The input file has no requests", "param": None,
                       "line": None})
    if len(lines) > MAX_LINES:
        errors.append({"code": "too_many_requests", "message": f"A batch holds at most {MAX_LINES} requests, "
                       f"this file has {len(lines)}", "param": None, "line": None})
    return lines, errors


def _line_problem(raw: bytes, endpoint: str, seen: set[str]) -> BatchLine | dict:
    def problem(code: str, message: str, param: str | None = None) -> dict:
        return {"code": code, "message": message, "param": param}

    try:
        item = _line_decoder.decode(raw)
        shape = _body_decoder.decode(item.body) if bytes(memoryview(item.body)[:1]) == b"{" else None
        _check_utf8(raw)  # msgspec leaves a raw value's strings unchecked
    except msgspec.ValidationError:  # a line (or body) that is JSON, but not an object: named below
        return problem("invalid_json_line", "Each line must be a JSON object.")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
        return problem("invalid_json_line", "This line is not parseable as valid JSON.")
    custom_id, body = item.custom_id, item.body
    if not isinstance(custom_id, str) or not custom_id:
        return problem("missing_required_parameter", "Missing required parameter: 'custom_id'.", "custom_id")
    if custom_id in seen:
        return problem("duplicate_custom_id", f"The custom_id {custom_id!r} is used more than once in this "
                       "batch; each must be unique.", "custom_id")
    if item.method != "POST":
        return problem("invalid_method", "The method must be POST.", "method")
    if item.url != endpoint:
        return problem("invalid_url", f"The url {item.url!r} does not match the batch's endpoint "
                       f"{endpoint!r}.", "url")
    if shape is None:
        return problem("missing_required_parameter", "Missing required parameter: 'body' (a JSON object).", "body")
    return BatchLine(custom_id, bytes(body), shape.model, shape.stream)


def _check_utf8(raw: bytes) -> None:
    """UnicodeDecodeError unless `raw` is UTF-8; a slice at a time, so that a line of megabytes checked on a
    thread lets the event loop run in between (one call over it all would hold the GIL throughout)."""
    for _ in utf8_slices(raw):
        pass

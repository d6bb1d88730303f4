"""OpenAI's Batch API jobs: a batch's input file checked line by line, its requests run through the
frontend's own HTTP app (in process) a bounded number at a time, and its output and error files.

Lifecycle, as OpenAI's: `validating` (a malformed input fails the whole batch, its `errors` naming
each bad line) -> `in_progress` -> `finalizing` -> `completed`; `cancelling` -> `cancelled` (what ran
is in the output); `expired` past the 24 h window (what did not run gets `batch_expired`). An answer
of 429/503/529 (the frontend's overload and no-worker answers) is retried with backoff until the
window ends: a batch waits out a busy deployment instead of failing its requests. Every other answer
is final: 2xx lines go to the output file, the rest to the error file, in input order. All batches
share `--batch-concurrency` requests in flight, so they leave room for interactive traffic."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from dynamo.frontend.batch_files import FileStore
from dynamo.frontend.inprocess import call_app

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
WINDOW_SECS = {"24h": 24 * 3600}
MAX_LINES = 50_000  # OpenAI's limit per batch
RETRY_STATUSES = (429, 503, 529)
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 8.0
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
USAGE_KEYS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")


@dataclass
class BatchLine:
    custom_id: str
    body: dict[str, Any]


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
    for number, raw in enumerate(data.split(b"\n"), 1):
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
        item = json.loads(raw)
    except ValueError:
        return problem("invalid_json_line", "This line is not parseable as valid JSON.")
    if not isinstance(item, dict):
        return problem("invalid_json_line", "Each line must be a JSON object.")
    custom_id, body = item.get("custom_id"), item.get("body")
    if not isinstance(custom_id, str) or not custom_id:
        return problem("missing_required_parameter", "Missing required parameter: 'custom_id'.", "custom_id")
    if custom_id in seen:
        return problem("duplicate_custom_id", f"The custom_id {custom_id!r} is used more than once in this "
                       "batch; each must be unique.", "custom_id")
    if item.get("method") != "POST":
        return problem("invalid_method", "The method must be POST.", "method")
    if item.get("url") != endpoint:
        return problem("invalid_url", f"The url {item.get('url')!r} does not match the batch's endpoint "
                       f"{endpoint!r}.", "url")
    if not isinstance(body, dict):
        return problem("missing_required_parameter", "Missing required parameter: 'body' (a JSON object).", "body")
    return BatchLine(custom_id, body)


class BatchRunner:
    """Owns every batch's task; `concurrency` requests in flight across all batches."""

    def __init__(self, app: Callable, files: FileStore, concurrency: int) -> None:
        self.app = app
        self.files = files
        self.concurrency = max(concurrency, 1)
        self.slots = asyncio.Semaphore(self.concurrency)
        self.batches: dict[str, Batch] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def start(self, batch: Batch) -> None:
        self.batches[batch.id] = batch
        task = asyncio.get_running_loop().create_task(self._run(batch), name=f"batch-{batch.id}")
        self.tasks[batch.id] = task
        task.add_done_callback(lambda _t, bid=batch.id: self.tasks.pop(bid, None))

    def cancel(self, batch: Batch) -> None:
        """Stop starting its requests; the running ones finish and go to the output with the rest."""
        if batch.status in ("validating", "in_progress"):
            batch.cancel_requested = True
            batch.enter("cancelling")

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, batch: Batch) -> None:
        # Off the event loop: a 200 MB input is seconds of JSON parsing.
        lines, errors = await asyncio.to_thread(parse_lines, self.files.get(batch.input_file_id).data,
                                                batch.endpoint)
        if errors:
            batch.errors = errors
            batch.enter("failed")
            return
        batch.total = len(lines)
        model = lines[0].body.get("model") if lines else None
        batch.model = model if isinstance(model, str) else None
        if batch.cancel_requested:
            batch.enter("cancelled")
            return
        batch.enter("in_progress")
        results: list[dict | None] = [None] * len(lines)
        todo = iter(enumerate(lines))
        await asyncio.gather(*(self._lines(batch, todo, results) for _ in range(min(self.concurrency, len(lines)))))
        await self._finish(batch, lines, results)

    async def _lines(self, batch: Batch, todo, results: list[dict | None]) -> None:
        for index, line in todo:
            async with self.slots:
                if batch.cancel_requested or time.time() >= batch.expires_at:
                    continue  # never sent: cancelled, or expired (_finish says so)
                status, body, request_id = await self._call(batch, line)
            self._record(batch, line, index, results, status, body, request_id)

    @staticmethod
    def _record(batch: Batch, line: BatchLine, index: int, results: list[dict | None], status: int, body: Any,
                request_id: str) -> None:
        entry = {"id": "batch_req_" + uuid.uuid4().hex[:24], "custom_id": line.custom_id,
                 "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None}
        results[index] = entry
        if 200 <= status < 300:
            batch.completed += 1
            batch.count_usage(body.get("usage") if isinstance(body, dict) else None)
        else:
            batch.failed += 1

    async def _call(self, batch: Batch, line: BatchLine) -> tuple[int, Any, str]:
        """One request through the app, retried while the deployment answers "busy" and the window lasts."""
        if line.body.get("stream"):
            return 400, _error("Streaming is not supported in a batch: set `stream` to false or leave it out",
                               "stream", "invalid_value"), ""
        payload = json.dumps(line.body).encode()
        request_id = uuid.uuid4().hex
        headers = [(b"x-dynamo-request-id", request_id.encode())]
        delay = RETRY_FIRST_S
        while True:
            try:
                status, body, _ = await call_app(self.app, batch.endpoint, payload, headers)
            except Exception as exc:  # the app crashed on it: an answer like any other 500
                return 500, _error(f"{type(exc).__name__}: {exc}", None, "internal_error"), request_id
            if status not in RETRY_STATUSES or time.time() + delay >= batch.expires_at or batch.cancel_requested:
                return status, _json_or_text(body), request_id
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _finish(self, batch: Batch, lines: list[BatchLine], results: list[dict | None]) -> None:
        expired = not batch.cancel_requested and any(r is None for r in results)
        if not batch.cancel_requested:
            batch.enter("finalizing")
        outputs = [r for r in results if r is not None and 200 <= r["response"]["status_code"] < 300]
        failures = [r for r in results if r is not None and not 200 <= r["response"]["status_code"] < 300]
        if expired:
            failures += [{"id": "batch_req_" + uuid.uuid4().hex[:24], "custom_id": line.custom_id, "response": None,
                          "error": {"code": "batch_expired", "message": "This request could not be executed before "
                                    "the completion window expired."}}
                         for line, r in zip(lines, results) if r is None]
            batch.failed += sum(r is None for r in results)
        try:
            batch.output_file_id = self._write(batch, "output", await asyncio.to_thread(_jsonl, outputs))
            batch.error_file_id = self._write(batch, "error", await asyncio.to_thread(_jsonl, failures))
        except Exception as exc:  # the store is full: the batch fails, saying why
            batch.errors = [{"code": "output_too_large", "message": str(exc), "param": None, "line": None}]
            batch.enter("failed")
            return
        batch.enter("cancelled" if batch.cancel_requested else "expired" if expired else "completed")

    def _write(self, batch: Batch, kind: str, data: bytes) -> str | None:
        if not data and kind == "error":
            return None
        return self.files.add(f"batch_{batch.id}_{kind}.jsonl", "batch_output", data).id


def _jsonl(entries: list[dict]) -> bytes:
    return "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries).encode()


def _error(message: str, param: str | None, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _json_or_text(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")

"""Running OpenAI's Batch API jobs: each request of a batch through the frontend's own HTTP app (in
process: the same admission, routing, migration, metrics and request logs), and its output and error
files. An answer of 429/503/529 (the frontend's overload and no-worker answers) is retried with backoff
until the window ends: a batch waits out a busy deployment instead of failing its requests. Every
other answer is final: 2xx lines go to the output file, the rest to the error file, in input order.
All batches share `--batch-concurrency` requests in flight, so they leave room for interactive
traffic, and their requests are background work (inprocess.BACKGROUND): the router queue and an
engine's priority scheduler serve every client's request before them. With a journal
(`--batch-dir`), a batch a restart interrupted resumes where it was."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any, Callable

from dynamo.frontend.batch_files import FileStore
from dynamo.frontend.batch_jobs import ACTIVE, Batch, BatchLine, parse_lines
from dynamo.frontend.batch_journal import BatchJournal
from dynamo.frontend.errors import ApiError
from dynamo.frontend.inprocess import call_app

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 503, 529)
PARSE_OFF_LOOP_BYTES = 1 << 20  # answers larger than this are parsed in a thread
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 8.0
RESUME_WAIT_S = 120.0  # a restarted frontend's wait for a resumed batch's model to be served again
MAX_BATCHES = 10_000  # records kept: past it the oldest ended ones go (their files stay until deleted)


class BatchRunner:
    """Owns every batch's task; `concurrency` requests in flight across all batches. With a journal,
    each change of a batch is written down as it happens (batch_journal.py)."""

    def __init__(self, app: Callable, files: FileStore, concurrency: int, journal: BatchJournal | None = None) -> None:
        self.app = app
        self.files = files
        self.journal = journal
        self.concurrency = max(concurrency, 1)
        self.slots = asyncio.Semaphore(self.concurrency)
        self._journal_writes = asyncio.Lock()
        self.batches: dict[str, Batch] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def start(self, batch: Batch, answered: dict[int, dict] | None = None,
              served: Callable[[str], bool] | None = None) -> None:
        """Run `batch`; resumed, with the answers it already had (by line) once `served(model)` says its
        model has workers again (or RESUME_WAIT_S passed), so that a restart does not answer it 404s."""
        self.batches[batch.id] = batch
        self._save(batch)
        task = asyncio.get_running_loop().create_task(self._guarded(batch, answered or {}, served),
                                                      name=f"batch-{batch.id}")
        self.tasks[batch.id] = task
        task.add_done_callback(lambda _t, bid=batch.id: self.tasks.pop(bid, None))

    def make_room(self) -> bool:
        """Room for one more batch record: the oldest ended ones forgotten past MAX_BATCHES; False when
        every kept batch is still running."""
        excess = len(self.batches) - MAX_BATCHES + 1
        if excess <= 0:
            return True
        ended = sorted((b for b in self.batches.values() if b.status not in ACTIVE), key=lambda b: b.created_at)
        for batch in ended[:excess]:
            del self.batches[batch.id]
            if self.journal is not None:
                self.journal.drop_batch(batch.id)
        return len(self.batches) < MAX_BATCHES

    def resume(self, served: Callable[[str], bool]) -> int:
        """The journal's batches back: ended ones to read, running ones run on. How many run on."""
        if self.journal is None:
            return 0
        running = 0
        for batch, answered in self.journal.load_batches():
            if batch.status in ACTIVE:
                self.start(batch, answered, served)
                running += 1
            else:
                self.batches[batch.id] = batch
        return running

    def cancel(self, batch: Batch) -> None:
        """Stop starting its requests; the running ones finish and go to the output with the rest."""
        if batch.status in ("validating", "in_progress"):
            batch.cancel_requested = True
            batch.enter("cancelling")
            self._save(batch)

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.journal is not None:
            self.journal.close()

    def _save(self, batch: Batch) -> None:
        if self.journal is not None:
            self.journal.save_batch(batch)

    def _enter(self, batch: Batch, status: str) -> None:
        batch.enter(status)
        self._save(batch)

    async def _guarded(self, batch: Batch, answered: dict[int, dict], served: Callable[[str], bool] | None) -> None:
        """Run the batch; a failure of the runner itself fails the batch (it never stays active)."""
        try:
            await self._run(batch, answered, served)
        except Exception as exc:
            log.exception("batch %s failed", batch.id)
            batch.errors = [{"code": "internal_error", "message": f"The batch could not be run: {exc!r}",
                             "param": None, "line": None}]
            if batch.status in ACTIVE:
                self._enter(batch, "failed")

    async def _run(self, batch: Batch, answered: dict[int, dict], served: Callable[[str], bool] | None) -> None:
        if served is not None and batch.model is not None:
            deadline = time.monotonic() + RESUME_WAIT_S
            while not served(batch.model) and time.monotonic() < deadline and not batch.cancel_requested:
                await asyncio.sleep(0.5)
        source = self.files.files.get(batch.input_file_id)
        # Off the event loop: a 200 MB input is seconds of JSON parsing.
        lines, errors = await asyncio.to_thread(parse_lines, source.data, batch.endpoint) if source else ([], [
            {"code": "missing_input_file", "message": f"The input file {batch.input_file_id} is gone (not restored "
             "from the journal)", "param": "input_file_id", "line": None}])
        if errors:
            batch.errors = errors
            self._enter(batch, "failed")
            return
        batch.total = len(lines)
        model = lines[0].model if lines else None
        batch.model = model if isinstance(model, str) else None
        results: list[dict | None] = [answered.get(i) for i in range(len(lines))]
        batch.recount(results)
        if batch.status == "validating":
            self._enter(batch, "cancelled" if batch.cancel_requested else "in_progress")
        if batch.status == "cancelled":
            return
        todo = ((i, line) for i, line in enumerate(lines) if results[i] is None)
        await asyncio.gather(*(self._lines(batch, todo, results) for _ in range(min(self.concurrency, len(lines)))))
        await self._finish(batch, lines, results)

    async def _lines(self, batch: Batch, todo, results: list[dict | None]) -> None:
        for index, line in todo:
            async with self.slots:
                if batch.cancel_requested or time.time() >= batch.expires_at:
                    continue  # never sent: cancelled, or expired (_finish says so)
                status, body, request_id = await self._call(batch, line)
            entry = {"id": "batch_req_" + uuid.uuid4().hex[:24], "custom_id": line.custom_id,
                     "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None}
            results[index] = entry
            batch.count(entry)
            if self.journal is not None:
                try:  # off the loop (an answer may be megabytes of JSON), one write at a time (one file handle)
                    async with self._journal_writes:
                        await asyncio.to_thread(self.journal.append_result, batch.id, index, entry)
                except OSError as exc:  # a full disk: the answer stays in memory, only a restart would redo it
                    log.warning("batch %s: answer %d not journaled: %s", batch.id, index, exc)

    async def _call(self, batch: Batch, line: BatchLine) -> tuple[int, Any, str]:
        """One request through the app, retried while the deployment answers "busy" and the window lasts."""
        request_id = uuid.uuid4().hex  # every answer's, a refusal's too (its error line names it as any other)
        if line.stream:
            return 400, _error("Streaming is not supported in a batch: set `stream` to false or leave it out",
                               "stream", "invalid_value"), request_id
        payload = line.body  # the input file's own JSON
        headers = [(b"x-dynamo-request-id", request_id.encode())]
        delay = RETRY_FIRST_S
        while True:
            try:
                status, body, _ = await call_app(self.app, batch.endpoint, payload, headers, background=True)
            except Exception as exc:  # the app crashed on it: an answer like any other 500
                return 500, _error(f"{type(exc).__name__}: {exc}", None, "internal_error"), request_id
            if status not in RETRY_STATUSES or time.time() + delay >= batch.expires_at or batch.cancel_requested:
                parsed = await asyncio.to_thread(_json_or_text, body) if len(body) > PARSE_OFF_LOOP_BYTES \
                    else _json_or_text(body)  # a 40 MB embeddings answer is a second of parsing
                return status, parsed, request_id
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _finish(self, batch: Batch, lines: list[BatchLine], results: list[dict | None]) -> None:
        expired = not batch.cancel_requested and any(r is None for r in results)
        if not batch.cancel_requested:
            self._enter(batch, "finalizing")
        outputs = [r for r in results if r is not None and 200 <= r["response"]["status_code"] < 300]
        failures = [r for r in results if r is not None and not 200 <= r["response"]["status_code"] < 300]
        if expired:
            failures += [{"id": "batch_req_" + uuid.uuid4().hex[:24], "custom_id": line.custom_id, "response": None,
                          "error": {"code": "batch_expired", "message": "This request could not be executed before "
                                    "the completion window expired."}}
                         for line, r in zip(lines, results) if r is None]
            batch.failed += sum(r is None for r in results)
        try:
            batch.output_file_id = await self._write(batch, "output", outputs)
            batch.error_file_id = await self._write(batch, "error", failures)
        except ApiError as exc:  # the store is full: the batch fails, saying why
            batch.errors = [{"code": "output_too_large", "message": exc.message, "param": None, "line": None}]
            self._enter(batch, "failed")
        else:
            self._enter(batch, "cancelled" if batch.cancel_requested else "expired" if expired else "completed")
        # Only now, the batch's end written down: a restart while finalizing finds its answers again.
        if self.journal is not None:
            self.journal.drop_results(batch.id)

    async def _write(self, batch: Batch, kind: str, entries: list[dict]) -> str | None:
        if not entries and kind == "error":
            return None
        data = await asyncio.to_thread(_jsonl, entries)
        stored = self.files.add(f"batch_{batch.id}_{kind}.jsonl", "batch_output", data, batch.output_expires_secs)
        if self.journal is not None:
            await asyncio.to_thread(self.journal.save_file, stored)
        return stored.id


def _jsonl(entries: list[dict]) -> bytes:
    return "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries).encode()


def _error(message: str, param: str | None, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _json_or_text(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")

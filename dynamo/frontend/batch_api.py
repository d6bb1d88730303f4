"""OpenAI's Files and Batch APIs over the frontend (`--batch-store-mb` > 0): upload a JSONL file of
requests, run it as a batch against `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` or
`/v1/responses`, poll it, download its output. The official clients' `files.create`,
`batches.create`, `batches.retrieve`, `batches.cancel`, `batches.list` and `files.content` work
unchanged. Routes: POST/GET /v1/files, GET/DELETE /v1/files/{id}, GET /v1/files/{id}/content,
POST/GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel. The jobs: batch_jobs.py;
the files: batch_files.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs

import msgspec
from prometheus_client.core import GaugeMetricFamily

from dynamo.frontend.batch_files import (BATCH_PREFIX, FILE_PREFIX, MAX_FILE_BYTES, UPLOAD_PURPOSES, FileStore,
                                         expiry_secs, page_after, parse_multipart, store_full)
from dynamo.frontend.batch_jobs import ACTIVE, ENDPOINTS, STATUSES, WINDOW_SECS, Batch
from dynamo.frontend.batch_journal import BatchJournal
from dynamo.frontend.batch_runner import BatchRunner
from dynamo.frontend.replicas import new_id, owner_tag
from dynamo.frontend.errors import ApiError, bad_request, body_too_large, no_route
from dynamo.frontend.openai import decode_body
from dynamo.runtime.asgi import BodyTooLarge, header, read_body, send_bytes, send_json

log = logging.getLogger(__name__)

FILES, BATCHES = "/v1/files", "/v1/batches"
MULTIPART_OVERHEAD = 1 << 16  # the form's headers and other fields around the file
CREATE_LIMIT = 1 << 20  # a batches.create body: ids, endpoint, window, metadata


class BatchCreate(msgspec.Struct, forbid_unknown_fields=False):
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    output_expires_after: dict[str, Any] | None = None


_create_decoder = msgspec.json.Decoder(BatchCreate)


class BatchApi:
    """The routes over one file store and one runner; `folder` (`--batch-dir`): their journal on disk."""

    def __init__(self, app: Callable, store_bytes: int, concurrency: int, folder: Path | None = None) -> None:
        self.app = app
        self.files = FileStore(store_bytes)
        self.journal = BatchJournal(folder) if folder is not None else None
        for stored in self.journal.load_files() if self.journal is not None else ():
            self.files.restore(stored)
        self.runner = BatchRunner(app, self.files, concurrency, self.journal)
        self.files.in_use = self._input_of_running_batch
        if self.journal is not None:
            self.files.on_drop = self.journal.drop_file

    def resume(self, served: Callable[[str], bool]) -> None:
        """Batches a restart interrupted run on (their model's workers first found again: `served`)."""
        running = self.runner.resume(served)
        if self.files.files or self.runner.batches:
            log.info("batch journal: %d file(s), %d batch(es) restored, %d running on", len(self.files.files),
                     len(self.runner.batches), running)

    def routes(self) -> dict[tuple[str, str], Any]:
        return {("POST", FILES): self.upload, ("GET", FILES): self.list_files,
                ("POST", BATCHES): self.create, ("GET", BATCHES): self.list_batches}

    def prefix_routes(self) -> list[tuple[str, str, Any]]:
        return [("GET", FILES + "/", self.file_get), ("DELETE", FILES + "/", self.file_delete),
                ("GET", BATCHES + "/", self.batch_get), ("POST", BATCHES + "/", self.batch_cancel)]

    async def close(self) -> None:
        await self.runner.close()

    # -- files -----------------------------------------------------------------------------------
    async def upload(self, scope, receive, send) -> None:
        self.app.admission.refuse_if_draining()
        room = min(MAX_FILE_BYTES, self.files.max_bytes - self.files.bytes)
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > room + MULTIPART_OVERHEAD:
            raise store_full(int(declared), room)  # refused before the body is read into memory
        try:
            body = await read_body(receive, MAX_FILE_BYTES + MULTIPART_OVERHEAD)
        except BodyTooLarge:
            raise store_full(MAX_FILE_BYTES + 1, room) from None
        # Off the event loop: splitting a 200 MB form copies it.
        fields = await asyncio.to_thread(parse_multipart, (header(scope, b"content-type") or b"").decode("latin-1"),
                                         body)
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
        if purpose not in UPLOAD_PURPOSES:
            raise bad_request(f"`purpose` must be one of {', '.join(UPLOAD_PURPOSES)}", "purpose")
        if "file" not in fields:
            raise bad_request("Missing the `file` field of the upload", "file", "missing_required_parameter")
        filename, data = fields["file"]
        lifetime = expiry_secs(_text(fields, "expires_after[anchor]"), _text(fields, "expires_after[seconds]"),
                               "expires_after")
        stored = self.files.add(filename or "upload", purpose, data, lifetime)
        if self.journal is not None:
            await asyncio.to_thread(self.journal.save_file, stored)
        await send_json(send, 200, stored.object())

    async def list_files(self, scope, receive, send) -> None:
        query = _query(scope)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request("`order` must be asc or desc", "order")
        files, more = self.files.listed(query.get("purpose"), order, query.get("after"), _limit(query, 10000))
        await send_json(send, 200, _page([f.object() for f in files], more))

    async def file_get(self, scope, receive, send) -> None:
        file_id, _, rest = scope["path"][len(FILES) + 1:].partition("/")
        if await self._elsewhere(file_id, FILE_PREFIX, scope, receive, send):
            return
        stored = self.files.get(file_id)
        if rest == "content":
            await send_bytes(send, 200, stored.data, [(b"content-type", b"application/octet-stream")])
        elif rest:
            raise no_route(scope["path"])
        else:
            await send_json(send, 200, stored.object())

    async def file_delete(self, scope, receive, send) -> None:
        file_id = scope["path"][len(FILES) + 1:]
        if await self._elsewhere(file_id, FILE_PREFIX, scope, receive, send):
            return
        self.files.get(file_id)  # an expired one is a 404, as for every route
        if self._input_of_running_batch(file_id):
            raise bad_request(f"File {file_id} is the input of a batch still running", "file_id", "file_in_use")
        self.files.delete(file_id)
        await send_json(send, 200, {"id": file_id, "object": "file", "deleted": True})

    # -- batches ---------------------------------------------------------------------------------
    async def create(self, scope, receive, send) -> None:
        self.app.admission.refuse_if_draining()  # its requests would only meet 503s until this frontend exits
        try:
            body = await read_body(receive, CREATE_LIMIT)
        except BodyTooLarge:
            raise body_too_large(CREATE_LIMIT) from None
        req = decode_body(_create_decoder, body)
        if await self._elsewhere(req.input_file_id, FILE_PREFIX, scope, receive, send, body):
            return  # its input is another replica's: the batch runs there
        if req.endpoint not in ENDPOINTS:
            raise bad_request(f"`endpoint` must be one of {', '.join(ENDPOINTS)}", "endpoint")
        if req.completion_window not in WINDOW_SECS:
            raise bad_request("`completion_window` must be 24h", "completion_window")
        _check_metadata(req.metadata)
        expires = req.output_expires_after or {}
        lifetime = expiry_secs(expires.get("anchor"), expires.get("seconds"), "output_expires_after")
        if self.files.get(req.input_file_id).purpose != "batch":
            raise bad_request(f"File {req.input_file_id} was not uploaded with purpose `batch`", "input_file_id")
        if not self.runner.make_room():
            raise ApiError(429, f"{len(self.runner.batches)} batches are running on this frontend: retry when one "
                           "has ended", "rate_limit_error", None, "too_many_batches")
        batch = Batch(new_id(BATCH_PREFIX, self.files.tag), req.endpoint, req.input_file_id, req.completion_window,
                      req.metadata, output_expires_secs=lifetime)
        self.runner.start(batch)
        await send_json(send, 200, batch.object())

    async def list_batches(self, scope, receive, send) -> None:
        query = _query(scope)
        batches = sorted(self.runner.batches.values(), key=lambda b: b.created_at, reverse=True)
        batches, more = page_after(batches, query.get("after"), _limit(query, 100))
        await send_json(send, 200, _page([b.object() for b in batches], more))

    async def batch_get(self, scope, receive, send) -> None:
        batch_id, _, rest = scope["path"][len(BATCHES) + 1:].partition("/")
        if rest:
            raise no_route(scope["path"])
        if await self._elsewhere(batch_id, BATCH_PREFIX, scope, receive, send):
            return
        await send_json(send, 200, self._batch(batch_id).object())

    async def batch_cancel(self, scope, receive, send) -> None:
        batch_id, _, rest = scope["path"][len(BATCHES) + 1:].partition("/")
        if rest != "cancel":
            raise no_route(scope["path"])
        if await self._elsewhere(batch_id, BATCH_PREFIX, scope, receive, send):
            return
        batch = self._batch(batch_id)
        if batch.status not in ("validating", "in_progress", "cancelling"):
            raise ApiError(409, f"Cannot cancel a batch with status '{batch.status}'.", "invalid_request_error",
                           None, "batch_not_cancellable")
        self.runner.cancel(batch)
        await send_json(send, 200, batch.object())

    async def _elsewhere(self, object_id: str, prefix: str, scope, receive, send, body: bytes = b"") -> bool:
        """Whether the request went to the replica that made `object_id`, a file or batch not held here."""
        held = self.files.files if prefix == FILE_PREFIX else self.runner.batches
        peers = self.files.peers
        return object_id not in held and peers is not None and await peers.forward(object_id, prefix, scope, body,
                                                                                     send, receive)

    def restored_tags(self) -> set[str]:
        """The replica tags in the ids of the files and batches read back from `--batch-dir`."""
        return ({owner_tag(f, FILE_PREFIX) for f in self.files.files}
                | {owner_tag(b, BATCH_PREFIX) for b in self.runner.batches}) - {None}  # type: ignore[return-value]

    def _input_of_running_batch(self, file_id: str) -> bool:
        return any(b.input_file_id == file_id and b.status in ACTIVE for b in self.runner.batches.values())

    def _batch(self, batch_id: str) -> Batch:
        batch = self.runner.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", "invalid_request_error", "batch_id",
                           "not_found")
        return batch


def _text(fields: dict[str, tuple[str | None, bytes]], name: str) -> str | None:
    return fields[name][1].decode("utf-8", "replace").strip() if name in fields else None


def _query(scope: dict) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}


def _limit(query: dict[str, str], most: int) -> int:
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise bad_request("`limit` must be an integer", "limit") from None
    if not 1 <= limit <= most:
        raise bad_request(f"`limit` must be between 1 and {most}", "limit")
    return limit


def _page(data: list[dict], more: bool) -> dict:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


class BatchCollector:
    """The Batch API's figures at scrape time: `{prefix}_batches{status}` (batches known, by status),
    `{prefix}_batch_requests{state}` (the requests of running batches: completed, failed, pending) and
    `{prefix}_batch_store_bytes` (what the files take of --batch-store-mb)."""

    def __init__(self, prefix: str, api: BatchApi) -> None:
        self.prefix, self.api = prefix, api

    def describe(self):
        return []

    def collect(self):
        batches = list(self.api.runner.batches.values())
        by_status = GaugeMetricFamily(f"{self.prefix}_batches", "Batch API batches, by status", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], sum(b.status == status for b in batches))
        yield by_status
        running = [b for b in batches if b.status in ACTIVE]
        requests = GaugeMetricFamily(f"{self.prefix}_batch_requests", "Requests of running batches, by state",
                                     labels=["state"])
        done = {"completed": sum(b.completed for b in running), "failed": sum(b.failed for b in running)}
        done["pending"] = sum(b.total for b in running) - done["completed"] - done["failed"]
        for state, value in done.items():
            requests.add_metric([state], value)
        yield requests
        yield GaugeMetricFamily(f"{self.prefix}_batch_store_bytes", "Bytes of Batch API files kept",
                                value=self.api.files.bytes)


def _check_metadata(metadata: dict[str, str] | None) -> None:
    """OpenAI's bounds on a batch's `metadata`: 16 pairs, keys of 64 characters, values of 512."""
    if metadata is None:
        return
    if len(metadata) > 16:
        raise bad_request("`metadata` holds at most 16 pairs", "metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise bad_request(f"`metadata` keys are at most 64 characters ({key[:16]!r}... has {len(key)})",
                              "metadata")
        if len(value) > 512:
            raise bad_request(f"`metadata[{key!r}]` is at most 512 characters (it has {len(value)})", "metadata")

"""Files of OpenAI's Files API as the Batch API uses them: a batch's input (`purpose: batch`, JSONL
uploaded as multipart/form-data) and the output and error files it writes (`batch_output`).

Kept in this frontend's memory up to `--batch-store-mb` in all (an upload past it is a 413, as is a
file past OpenAI's 200 MB), and with `--batch-dir` on disk too, read back at start (batch_journal.py);
without it a restart loses them, as it loses the batches. Replicas do not share them: a client that
uploads, runs and downloads must reach one replica (affinity at the balancer)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from dynamo.frontend.errors import ApiError, bad_request

MAX_FILE_BYTES = 200 << 20  # OpenAI's limit for a batch input file
PURPOSES = ("batch", "batch_output", "user_data", "fine-tune", "assistants", "vision", "evals")
UPLOAD_PURPOSES = tuple(p for p in PURPOSES if p != "batch_output")  # written by batches only


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def object(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "expires_at": None, "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "status_details": None}


class FileStore:
    """The files by id, in upload order; `max_bytes` bounds their content in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.files: dict[str, StoredFile] = {}

    def add(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        if len(data) > MAX_FILE_BYTES or self.bytes + len(data) > self.max_bytes:
            raise store_full(len(data), self.max_bytes - self.bytes)
        stored = StoredFile("file-" + uuid.uuid4().hex[:24], filename, purpose, data)
        self.files[stored.id] = stored
        self.bytes += len(data)
        return stored

    def restore(self, stored: StoredFile) -> None:
        """A file read back from the journal (counted against the bound, never refused)."""
        self.files[stored.id] = stored
        self.bytes += len(stored.data)

    def get(self, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None:
            raise file_not_found(file_id)
        return stored

    def delete(self, file_id: str) -> None:
        stored = self.get(file_id)
        del self.files[file_id]
        self.bytes -= len(stored.data)

    def listed(self, purpose: str | None, order: str, after: str | None, limit: int) -> tuple[list[StoredFile], bool]:
        """A page of files: `limit` of them after the one named `after`, newest first unless `order` is asc."""
        files = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        if order == "desc":
            files.reverse()
        return page_after(files, after, limit)


def page_after(items: list, after: str | None, limit: int) -> tuple[list, bool]:
    """OpenAI's cursor pages: `limit` items after the one whose id is `after` (none past an unknown id),
    and whether more follow."""
    if after is not None:
        ids = [item.id for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return items[:limit], len(items) > limit


def store_full(size: int, room: int) -> ApiError:
    limit = min(MAX_FILE_BYTES, room)
    return ApiError(413, f"File of {size} bytes is too large: {max(limit, 0)} bytes can be stored "
                    f"(--batch-store-mb bounds every file together, and one file is at most {MAX_FILE_BYTES} bytes)",
                    "invalid_request_error", "file", "file_too_large")


def file_not_found(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", "invalid_request_error", "file_id", "not_found")


def parse_multipart(content_type: str, body: bytes | bytearray) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data fields: name -> (filename or None, content). A 400 for anything else."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise bad_request("Expected a multipart/form-data upload with `file` and `purpose` fields", "file",
                          "invalid_content_type")
    boundary = _param(params, "boundary")
    if not boundary:
        raise bad_request("multipart/form-data without a boundary", "file", "invalid_content_type")
    delimiter = b"--" + boundary.encode("latin-1")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise bad_request("Malformed multipart/form-data part", "file", "invalid_multipart")
        disposition = next((line.split(b":", 1)[1].decode("utf-8", "replace") for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-disposition:")), "")
        name = _param(disposition, "name")
        if name:
            fields[name] = (_param(disposition, "filename"),
                            bytes(content[:-2] if content.endswith(b"\r\n") else content))
    return fields


def _param(header: str, key: str) -> str | None:
    for item in header.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep and name.strip().lower() == key:
            return value.strip().strip('"')
    return None

"""Files of OpenAI's Files API as the Batch API uses them: a batch's input (`purpose: batch`, JSONL
uploaded as multipart/form-data) and the output and error files it writes (`batch_output`).

Kept in this frontend's memory up to `--batch-store-mb` in all (an upload past it is a 413, as is a
file past OpenAI's 200 MB), and with `--batch-dir` on disk too, read back at start (batch_journal.py);
without it a restart loses them, as it loses the batches. Replicas keep their own, and answer for
each other's: a file or batch id made by another live replica is forwarded there (replicas.py).

Files expire as OpenAI's do: an upload's `expires_after` (anchor `created_at`, 1 hour to 30 days),
by default 30 days for `batch` inputs and never for the other purposes; a batch's outputs by its
`output_expires_after`, by default 30 days too. An expired file is gone for every route at once and
its bytes are freed at the next upload or output (no sweeper task), except while it is the
input of a running batch, which keeps it until the batch ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from dynamo.frontend.errors import ApiError, bad_request
from dynamo.frontend.replicas import Replicas, new_id

FILE_PREFIX, BATCH_PREFIX = "file-", "batch_"  # of their ids
MAX_FILE_BYTES = 200 << 20  # OpenAI's limit for a batch input file
MIN_EXPIRY_SECS, MAX_EXPIRY_SECS = 3600, 30 * 24 * 3600  # OpenAI's bounds on `expires_after.seconds`
DEFAULT_EXPIRY_SECS = {"batch": MAX_EXPIRY_SECS, "batch_output": MAX_EXPIRY_SECS}  # other purposes: never
PURPOSES = ("batch", "batch_output", "user_data", "fine-tune", "assistants", "vision", "evals")
UPLOAD_PURPOSES = tuple(p for p in PURPOSES if p != "batch_output")  # written by batches only


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))
    expires_at: int | None = None

    def object(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class FileStore:
    """The files by id, in upload order; `max_bytes` bounds their content in all. `in_use(id)`: a file
    that must outlive its expiry for now (a running batch's input); `on_drop(id)`: told of every file
    that goes, deleted or expired (the journal's copy goes with it)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.files: dict[str, StoredFile] = {}
        self.in_use: Callable[[str], bool] = lambda _file_id: False
        self.on_drop: Callable[[str], None] = lambda _file_id: None
        self.tag = ""  # this replica's, in the ids of the files (and batches) it makes (replicas.py)
        self.peers: Replicas | None = None  # where a file or batch made by another replica is asked for

    def add(self, filename: str, purpose: str, data: bytes, expires_after: int | None = None) -> StoredFile:
        """Store a file; `expires_after` seconds from now, else its purpose's default."""
        self.expire()
        if len(data) > MAX_FILE_BYTES or self.bytes + len(data) > self.max_bytes:
            raise store_full(len(data), self.max_bytes - self.bytes)
        stored = StoredFile(new_id(FILE_PREFIX, self.tag), filename, purpose, data)
        lifetime = expires_after if expires_after is not None else DEFAULT_EXPIRY_SECS.get(purpose)
        stored.expires_at = None if lifetime is None else stored.created_at + lifetime
        self.files[stored.id] = stored
        self.bytes += len(data)
        return stored

    def expire(self, now: float | None = None) -> None:
        """Drop every expired file no running batch needs."""
        now = time.time() if now is None else now
        for stored in [f for f in self.files.values() if f.expired(now) and not self.in_use(f.id)]:
            self.delete(stored.id)

    def restore(self, stored: StoredFile) -> None:
        """A file read back from the journal (counted against the bound, never refused)."""
        self.files[stored.id] = stored
        self.bytes += len(stored.data)

    def get(self, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None or (stored.expired(time.time()) and not self.in_use(file_id)):
            raise file_not_found(file_id)
        return stored

    def delete(self, file_id: str) -> None:
        stored = self.files.pop(file_id, None)
        if stored is None:
            raise file_not_found(file_id)
        self.bytes -= len(stored.data)
        self.on_drop(file_id)

    def listed(self, purpose: str | None, order: str, after: str | None, limit: int) -> tuple[list[StoredFile], bool]:
        """A page of files: `limit` of them after the one named `after`, newest first unless `order` is asc.
        Expired files are left out of the page but keep their place, so a cursor on one that has just
        expired still pages on."""
        files = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        if order == "desc":
            files.reverse()
        page, more = page_after(files, after, limit)
        now = time.time()
        return [f for f in page if not f.expired(now) or self.in_use(f.id)], more


def page_after(items: list, after: str | None, limit: int) -> tuple[list, bool]:
    """OpenAI's cursor pages: `limit` items after the one whose id is `after` (none past an unknown id),
    and whether more follow."""
    if after is not None:
        ids = [item.id for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return items[:limit], len(items) > limit


def expiry_secs(anchor: str | None, seconds: object, param: str) -> int | None:
    """An `expires_after` policy's lifetime in seconds (None: none given), or a 400 naming `param`."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise bad_request(f"`{param}.anchor` must be 'created_at'", f"{param}.anchor")
    try:
        value = int(seconds) if isinstance(seconds, (int, str)) and not isinstance(seconds, bool) else None
    except ValueError:
        value = None
    if value is None or not MIN_EXPIRY_SECS <= value <= MAX_EXPIRY_SECS:
        raise bad_request(f"`{param}.seconds` must be an integer from {MIN_EXPIRY_SECS} (1 hour) to "
                          f"{MAX_EXPIRY_SECS} (30 days)", f"{param}.seconds")
    return value


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
    else:  # an empty or cut-off body: say so, rather than name a field it never got to
        raise bad_request("Malformed multipart/form-data body: it ends before its closing boundary", "file",
                          "invalid_multipart")
    return fields


def _param(header: str, key: str) -> str | None:
    for item in header.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep and name.strip().lower() == key:
            return value.strip().strip('"')
    return None

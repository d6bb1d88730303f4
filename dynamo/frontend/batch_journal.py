"""The Batch API's state on disk (`--batch-dir`), so that a frontend restart (a rolling update, a
crash) loses no file and no batch: a batch that was running resumes where it was, the requests it
had answered kept, the others sent (again, for the few in flight at the restart: at least once).

Layout under the folder: `files/<id>` (content) and `files/<id>.json` (name, purpose, time);
`batches/<id>.json` (the batch's record, rewritten at each change of status) and
`batches/<id>.results` (one JSON line per answered request, appended as it answers, removed once
the batch's output files are written). Writes go to a temporary name first and are renamed into
place, so a crash leaves the old version or the new one, never half of one."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import IO

from dynamo.frontend.batch_files import StoredFile
from dynamo.frontend.batch_jobs import Batch

log = logging.getLogger(__name__)


class BatchJournal:
    def __init__(self, folder: Path) -> None:
        self.files = folder / "files"
        self.batches = folder / "batches"
        self.files.mkdir(parents=True, exist_ok=True)
        self.batches.mkdir(parents=True, exist_ok=True)
        self._results: dict[str, IO[str]] = {}

    # -- files -------------------------------------------------------------------------------------
    def save_file(self, stored: StoredFile) -> None:
        _write_atomically(self.files / stored.id, stored.data)
        meta = {"filename": stored.filename, "purpose": stored.purpose, "created_at": stored.created_at,
                "expires_at": stored.expires_at}
        _write_atomically(self.files / f"{stored.id}.json", json.dumps(meta).encode())

    def drop_file(self, file_id: str) -> None:
        """Remove a file's copy; a disk that refuses is logged (a restart would read it back, expired)."""
        for path in (self.files / f"{file_id}.json", self.files / file_id):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("batch file %s not removed from disk: %s", file_id, exc)

    def load_files(self) -> list[StoredFile]:
        """Every stored file, oldest first (one without its content or record is skipped, logged)."""
        out = []
        for meta_path in self.files.glob("*.json"):
            file_id = meta_path.name.removesuffix(".json")
            try:
                meta = json.loads(meta_path.read_bytes())
                out.append(StoredFile(file_id, meta["filename"], meta["purpose"], (self.files / file_id).read_bytes(),
                                      meta["created_at"], meta.get("expires_at")))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("batch file %s not restored: %s", file_id, exc)
        return sorted(out, key=lambda f: (f.created_at, f.id))

    # -- batches -----------------------------------------------------------------------------------
    def save_batch(self, batch: Batch) -> None:
        _write_atomically(self.batches / f"{batch.id}.json", json.dumps(dataclasses.asdict(batch)).encode())

    def drop_batch(self, batch_id: str) -> None:
        (self.batches / f"{batch_id}.json").unlink(missing_ok=True)
        self.drop_results(batch_id)

    def append_result(self, batch_id: str, index: int, entry: dict) -> None:
        out = self._results.get(batch_id)
        if out is None:
            out = self._results[batch_id] = open(self.batches / f"{batch_id}.results", "a", encoding="utf-8")
        out.write(json.dumps({"index": index, "entry": entry}, separators=(",", ":")) + "\n")
        out.flush()  # in the OS's hands: a crash of this process loses none of it

    def drop_results(self, batch_id: str) -> None:
        out = self._results.pop(batch_id, None)
        if out is not None:
            out.close()
        (self.batches / f"{batch_id}.results").unlink(missing_ok=True)

    def load_batches(self) -> list[tuple[Batch, dict[int, dict]]]:
        """Every batch, oldest first, with the answers a running one had already written."""
        out = []
        for path in self.batches.glob("*.json"):
            try:
                batch = Batch(**json.loads(path.read_bytes()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("batch record %s not restored: %s", path.name, exc)
                continue
            out.append((batch, self._answers(batch.id)))
        return sorted(out, key=lambda item: (item[0].created_at, item[0].id))

    def _answers(self, batch_id: str) -> dict[int, dict]:
        answers: dict[int, dict] = {}
        path = self.batches / f"{batch_id}.results"
        if not path.exists():
            return answers
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
                answers[int(item["index"])] = item["entry"]
            except (ValueError, KeyError, TypeError):
                continue  # the last line, cut short by a crash: that request runs again
        return answers

    def close(self) -> None:
        for out in self._results.values():
            out.close()
        self._results.clear()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)

"""`run --log-dir`: one file per replica, `DIR/<replica>.log`, rotated by size as a kubelet rotates a
container's log (`--log-max-mb`, `--log-backups`): past the size the file becomes `.1` (older ones shift
up, the oldest beyond the count is deleted) and a new one is opened. Whole lines are written, so a line is
never split across two files; within a file the bytes are in the order the replica wrote them."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger("dynamo.deploy")


@dataclass(frozen=True)
class LogRotation:
    max_bytes: int = 100 * 1024 * 1024  # 0: never rotate
    backups: int = 3


class RotatingLog:
    """An append-only log file that rotates once it has passed `rotation.max_bytes`. A failure to write or
    rotate (a full disk, a removed directory) never stops the replica's output: it is said once, the file is
    reopened at the next line, and the lines meanwhile go to the terminal only."""

    def __init__(self, path: str, rotation: LogRotation) -> None:
        self.path, self.rotation = path, rotation
        self._fh: BinaryIO | None = None
        self._size = 0
        self._warned = False
        self._open()

    def _open(self) -> None:
        try:
            self._fh = open(self.path, "ab")
            self._size = self._fh.tell()
        except OSError as exc:
            self._fh = None
            self._failed("open", exc)

    def _failed(self, what: str, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("cannot %s %s (%s): its lines go to the terminal only until it works again", what,
                        self.path, exc)

    def write(self, data: bytes) -> None:
        if self._fh is None:
            self._open()
            if self._fh is None:
                return
        try:
            self._fh.write(data if data.endswith(b"\n") else data + b"\n")  # a last line without its newline
            self._fh.flush()
            self._size += len(data)
            if self.rotation.max_bytes and self._size >= self.rotation.max_bytes:
                self._rotate()
        except OSError as exc:
            self._failed("write", exc)
            self._drop()

    def _rotate(self) -> None:
        self._drop()
        backups = self.rotation.backups
        if backups <= 0:  # no backups kept: the full file is dropped and a new one begun
            os.remove(self.path)
        else:
            for n in range(backups - 1, 0, -1):  # .2 -> .3 (replacing the oldest), .1 -> .2
                if os.path.exists(f"{self.path}.{n}"):
                    os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def _drop(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()

    def close(self) -> None:
        self._drop()

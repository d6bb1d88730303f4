"""On-disk layout of the file discovery store: key files, lease heartbeats, prefix scans.

Under the root:
- one file per key: each `/`-separated segment is percent-encoded (dots too, so no
  segment is `.`/`..` or looks hidden) and the leaf gets a `.kv` suffix, so a key may
  also be a prefix of other keys (`.../{id}` and `.../{id}/{lora}`). Content is
  `{lease:x}\\n` + value; lease 0 means unleased. Writes go to a hidden temp file and
  `os.replace`, so readers never see half a value.
- `.leases/{lease:x}`: one heartbeat file per live store, content = its TTL, mtime
  touched every ttl/3. A key whose heartbeat is missing or older than that TTL is dead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote, unquote

from dynamo.runtime.settings import RuntimeSettings

LEASE_DIR = ".leases"
SUFFIX = ".kv"


def default_root(settings: RuntimeSettings | None = None) -> str:
    """DYN_FILE_KV, else `dynamo_store_kv` in the temp directory (shared by every local process)."""
    settings = settings or RuntimeSettings.from_env()
    return settings.file_kv or os.path.join(tempfile.gettempdir(), "dynamo_store_kv")


def encode_segment(segment: str) -> str:
    """Path-safe, reversible: never empty, never hidden, never `.`/`..`, never ends in `.kv`."""
    return quote(segment, safe="").replace(".", "%2E") or "%"


def decode_segment(name: str) -> str:
    return "" if name == "%" else unquote(name)


def key_path(root: str, key: str) -> str:
    parts = key.split("/")
    return os.path.join(root, *(encode_segment(p) for p in parts[:-1]), encode_segment(parts[-1]) + SUFFIX)


def write_atomic(path: str, data: bytes) -> None:
    """Temp file + os.replace: readers see the old or the new content, never a mix."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:  # a full disk, a removed directory: leave no temp file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_entry(path: str) -> tuple[int, bytes] | None:
    """(lease id, value) of a key file, or None if it vanished or is malformed."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    head, sep, value = data.partition(b"\n")
    try:
        return (int(head, 16), value) if sep else None
    except ValueError:
        return None


class LeaseTable:
    """Liveness of leases from their heartbeat files; TTLs are cached (they never change)."""

    def __init__(self, root: str, fallback_ttl: float) -> None:
        self.dir = os.path.join(root, LEASE_DIR)
        self.fallback_ttl = fallback_ttl
        self._ttls: dict[int, float] = {}

    def ttl_of(self, lease: int) -> float:
        ttl = self._ttls.get(lease)
        if ttl is None:
            try:
                with open(os.path.join(self.dir, f"{lease:x}"), "rb") as fh:
                    ttl = float(fh.read().strip() or self.fallback_ttl)
            except (OSError, ValueError):
                return self.fallback_ttl
            self._ttls[lease] = ttl
        return ttl

    def age(self, lease: int, now: float | None = None) -> float | None:
        """Seconds since the heartbeat was touched, or None when it is missing."""
        try:
            mtime = os.stat(os.path.join(self.dir, f"{lease:x}")).st_mtime
        except OSError:
            return None
        return (time.time() if now is None else now) - mtime

    def alive(self, lease: int, now: float | None = None) -> bool:
        if lease == 0:
            return True
        age = self.age(lease, now)
        return age is not None and age <= self.ttl_of(lease)


@dataclass
class _Cached:
    sig: tuple[int, int, int]
    lease: int
    value: bytes


class PrefixScanner:
    """Lists the key files under a prefix, re-reading only files whose stat changed."""

    def __init__(self, root: str, prefix: str) -> None:
        parts = prefix.split("/")
        self.prefix = prefix
        self.partial = parts[-1]
        self.base = os.path.join(root, *(encode_segment(p) for p in parts[:-1]))
        # Key text of `base`; None at the root, where keys start without a separator.
        self.key_base: str | None = "/".join(parts[:-1]) if len(parts) > 1 else None
        self._cache: dict[str, _Cached] = {}

    def scan(self) -> dict[str, tuple[int, bytes]]:
        """key -> (lease, value) for every key file under the prefix."""
        found: dict[str, tuple[int, bytes]] = {}
        seen: set[str] = set()
        self._walk(self.base, self.key_base, True, found, seen)
        for path in self._cache.keys() - seen:
            del self._cache[path]
        return found

    def _walk(self, directory: str, key_dir: str | None, top: bool, found: dict, seen: set) -> None:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue  # temp files and the lease directory
            is_leaf = entry.name.endswith(SUFFIX)
            segment = decode_segment(entry.name[: -len(SUFFIX)] if is_leaf else entry.name)
            if top and not segment.startswith(self.partial):
                continue
            key = segment if key_dir is None else f"{key_dir}/{segment}"
            if not is_leaf:
                if entry.is_dir(follow_symlinks=False):
                    self._walk(entry.path, key, False, found, seen)
                continue
            item = self._read(entry)
            if item is not None and key.startswith(self.prefix):
                seen.add(entry.path)
                found[key] = (item.lease, item.value)

    def _read(self, entry: os.DirEntry) -> _Cached | None:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return None
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(entry.path)
        if cached is not None and cached.sig == sig:
            return cached
        parsed = read_entry(entry.path)
        if parsed is None:
            return None
        cached = _Cached(sig, parsed[0], parsed[1])
        self._cache[entry.path] = cached
        return cached

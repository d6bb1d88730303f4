"""Giving freed heap memory back to the OS. A burst of big request bodies leaves glibc's
heap holding tens of megabytes it no longer uses (freed blocks below the top, per-thread
arenas); `malloc_trim` returns them. ctypes releases the GIL for the call, so it can
run on a worker thread without holding the event loop."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
from concurrent.futures import Executor

log = logging.getLogger(__name__)


_M_MMAP_THRESHOLD = -3


@functools.cache
def _libc():
    """glibc (malloc_trim, mallopt), loaded on first use: libc.so.6 first, since find_library may run
    ldconfig; None where it is not glibc (musl, macOS): the allocator is left as it is."""
    for name in ("libc.so.6", None):
        try:
            lib = ctypes.CDLL(name or ctypes.util.find_library("c"))
        except (OSError, TypeError):
            continue
        return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None
    return None


def trim_heap() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(ctypes.c_size_t(0))


def pin_mmap_threshold(size: int = 1 << 20) -> None:
    """Blocks of `size` and more always come from mmap and go back to the OS when freed.
    glibc otherwise raises the threshold to the largest block freed (up to 32 MB), after
    which big request bodies land in the heap: growing them copies, freeing them keeps RSS."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(size))


class HeapTrimmer:
    """Returns the freed heap to the OS a second after it is asked to (after a big request body), at
    most once a second, on `pool` (off the event loop)."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool
        self._pending = False

    def schedule(self) -> None:
        if self._pending:
            return
        self._pending = True
        asyncio.get_running_loop().call_later(1.0, self._run)

    def _run(self) -> None:
        self._pending = False
        try:
            self.pool.submit(trim_heap)
        except RuntimeError:  # the pool was shut down with the app: nothing left to trim for
            pass

"""CPU placement of the transport's I/O threads inside an engine process.

Engines pin their compute threads: vLLM's CPU worker binds its process to the cores in
`VLLM_CPU_OMP_THREADS_BIND`, and every thread created afterwards inherits that mask, our
sender's and puller's threads too. Two engines sharing a core (or one engine spinning on
it in its busy loop) then leave those threads runnable but unscheduled; a pull that arrives
then waits behind the engine's compute, seen as KV pulls timing out after 40 s while the
engine kept serving. Transfer threads only move bytes, so they may run on any CPU the
process is allowed: each widens its own affinity when it starts.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def unpin_current_thread() -> None:
    """Let the calling thread run on every CPU of the machine that the process's cpuset allows
    (the kernel intersects the mask with it). A no-op where affinity is not supported."""
    if not hasattr(os, "sched_setaffinity"):
        return
    try:
        # pid 0 is the calling thread on Linux; the engine's own threads keep their binding
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except OSError as exc:
        log.debug("KV transfer thread keeps its CPU binding: %s", exc)

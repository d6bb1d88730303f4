"""Fixtures for the vLLM worker tests: the vLLM venv, a tiny Llama WITH weights (built by
that venv's torch), and a Cluster that starts `python -m dynamo.vllm` with the vLLM venv's
Python while the frontend and the tests run in the main venv.

No `.venv-vllm` (see scripts/install_vllm_cpu.sh): the tests fail when CI is set, else skip.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import msgspec
import pytest

from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest, request_encoder
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.ci import unavailable
from tests.fixtures.procs import REPO, Cluster, Proc, http_get, wait_until

VLLM_VENV = Path(os.environ.get("DYN_VLLM_VENV", REPO / ".venv-vllm"))
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
MODEL = "tiny"
BLOCK_SIZE = 32
MAX_MODEL_LEN = 2048  # the tiny model's max_position_embeddings


def ids(n: int, salt: int) -> list[int]:
    """Deterministic prompt token ids clear of the tiny model's special tokens (0-5)."""
    return [6 + (i * 37 + salt * 101) % 4000 for i in range(n)]
# Quiet, offline, small KV cache; see shared/reference/engines-on-cpu.md.
ENGINE_ENV = {"DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
              "TOKENIZERS_PARALLELISM": "false"}
ENGINE_ARGS = ["--enforce-eager", "--dtype", "float32", "--block-size", str(BLOCK_SIZE), "--max-model-len",
               str(MAX_MODEL_LEN), "--distributed-executor-backend", "uni", "--seed", "0"]
# Generous: 4-30 s on an idle 2-core box, minutes when it is shared (DYN_TEST_ENGINE_START_TIMEOUT overrides).
ENGINE_START_TIMEOUT = float(os.environ.get("DYN_TEST_ENGINE_START_TIMEOUT", "240"))


def require_vllm_venv() -> Path:
    if VLLM_PYTHON.exists():
        return VLLM_PYTHON
    message = f"no vLLM venv at {VLLM_VENV}: run scripts/install_vllm_cpu.sh"
    unavailable(message)


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    return require_vllm_venv()


def build_model(python: Path, tmp_path_factory, builder: str, *args: str) -> Path:
    """A tiny model with random weights from one of `dynamo.llm`'s offline builders (`builder`: its module
    name, e.g. "tiny_model"), built by the vLLM venv's torch into a fresh directory."""
    out = tmp_path_factory.mktemp(f"vllm-{builder}") / builder
    subprocess.run([str(python), "-m", f"dynamo.llm.{builder}", "--out", str(out), "--weights", *args], cwd=REPO,
                   check=True, capture_output=True, timeout=600)  # torch import alone is minutes on a loaded 2-core box
    assert (out / "model.safetensors").is_file()
    return out


@pytest.fixture(scope="session")
def vllm_model(vllm_python, tmp_path_factory) -> Path:
    """Tiny random-weight Llama (fp32-servable), built once per session."""
    return build_model(vllm_python, tmp_path_factory, "tiny_model")


SYSTEM_SERVER_LINE = re.compile(rb"system server on \S+:(\d+) ")


class VenvProc(Proc):
    """`Proc` running under another interpreter (the vLLM venv's)."""

    def __init__(self, python: Path, module: str, args: list[str], env: dict[str, str], log_dir: Path,
                 name: str) -> None:
        self.name = name
        self.launch = (python, module, args, env, log_dir)  # what `VllmCluster.restart` starts again
        self._system_port: int | None = None
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen([str(python), "-m", module, *args],
                                      env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, cwd=REPO,
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)


    @property
    def system_port(self) -> int:
        """The port this worker's system server bound (`DYN_SYSTEM_PORT=0`), read from its log.
        A port picked free by the test and bound by the worker minutes later (vLLM's import and
        engine start) could meanwhile be taken by any other process on the box, whose `/health`
        200 would pass for this worker's; the kernel's own pick cannot be."""
        if self._system_port is None:
            found = SYSTEM_SERVER_LINE.search(self.log_path.read_bytes())
            if found is None:
                raise ConnectionRefusedError(f"{self.name} has not started its system server yet")
            self._system_port = int(found.group(1))
        return self._system_port


class VllmCluster(Cluster):
    def __init__(self, tmp: Path, model_dir: Path, python: Path) -> None:
        super().__init__(tmp, model_dir, "file")
        self.python = python

    def vllm_worker(self, *args: str, env: dict | None = None, wait: bool = True) -> VenvProc:
        """Start `python -m dynamo.vllm` on the tiny model; wait for its /health 200."""
        self._count += 1
        full_env = {**self.env, **ENGINE_ENV, "DYN_SYSTEM_PORT": "0", **(env or {})}
        proc = VenvProc(self.python, "dynamo.vllm",
                        ["--model", str(self.model_dir), "--served-model-name", MODEL, *ENGINE_ARGS, *args],
                        full_env, self.tmp, f"vllm{self._count}")
        self.procs.append(proc)
        if wait:
            wait_healthy(proc)
        return proc

    def restart(self, proc: VenvProc) -> VenvProc:
        """Kill `proc` (its whole process group) and start the same worker again, logging to a new file."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stop()
        again = VenvProc(*proc.launch, f"{proc.name}-again")
        self.procs[self.procs.index(proc)] = again
        return again

    def wait_all_healthy(self, workers: dict[str, VenvProc]) -> dict[str, VenvProc]:
        """Wait for every worker started with `wait=False`. An engine that is not healthy in time is
        started once more: several CPU vLLM engines starting together on a 2-core box can starve one
        of them in its own start-up handshake ("No available shared memory broadcast block"), which it
        does not leave. A worker that exited, or fails twice, fails the fixture with its log."""
        ready = dict(workers)
        for name, proc in workers.items():
            try:
                wait_healthy(proc)
            except TimeoutError as exc:
                print(f"{proc.name} stuck in start-up, starting it again: {exc}", file=sys.stderr)
                ready[name] = self.restart(proc)
                wait_healthy(ready[name])
        return ready

    def stop(self) -> None:
        groups = [p.pid for p in self.procs if isinstance(p, VenvProc)]
        super().stop()
        for pgid in groups:  # vLLM's engine-core/worker children, whatever state the worker left them in
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def health(proc: Proc) -> int:
    try:
        return http_get(f"http://127.0.0.1:{proc.system_port}/health", timeout=2)[0]  # type: ignore[attr-defined]
    except OSError:
        return 0


def wait_healthy(proc: Proc, timeout: float = ENGINE_START_TIMEOUT) -> None:
    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log()}")
        return health(proc) == 200

    try:
        wait_until(ready, timeout, f"{proc.name} /health 200", interval=0.5)
    except TimeoutError:
        raise TimeoutError(f"{proc.name} not healthy after {timeout}s:\n{proc.log()}") from None


SCRAPE_TIMEOUT_S = 30.0


def metrics(proc: Proc) -> str:
    # A generous timeout: CI once saw a prefill worker's scrape outlast 5 s right after its
    # requests, on a 2-core box running two CPU engines (here: 1-5 ms per scrape).
    return http_get(f"http://127.0.0.1:{proc.system_port}/metrics", timeout=SCRAPE_TIMEOUT_S)[1].decode()  # type: ignore[attr-defined]


async def direct_generate(address: str, request: PreprocessedRequest) -> list[LLMEngineOutput]:
    """Talk to the worker's request plane directly (no frontend): the raw token stream."""
    client = RequestPlaneClient()
    try:
        stream = await client.open_stream(address, "generate", request_encoder.encode(request))
        return [msgspec.msgpack.decode(item, type=LLMEngineOutput) async for item in stream]
    finally:
        await client.close()


def engine_processes(proc: Proc) -> list[int]:
    """The worker's descendant processes (vLLM's EngineCore and its model worker), from /proc."""
    found, todo = [], [proc.pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                pids = [int(pid) for pid in children.read_text().split()]
            except OSError:  # the task ended meanwhile
                continue
            found += pids
            todo += pids
    return found


def freeze_engine(proc: Proc) -> list[int]:
    """Stop (SIGSTOP) vLLM's engine processes under `proc` while the worker's own process runs
    on: a request in the engine can neither advance nor finish, however fast the box. Returns
    the pids for `thaw_engine`."""
    pids = engine_processes(proc)
    assert pids, f"no engine processes under {proc.name}"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def thaw_engine(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def settled(count: Callable[[], int], quiet: float = 0.3, deadline: float = 30.0) -> int:
    """Wait until `count()` (what a client has received) stops moving for `quiet` seconds: with
    the engines frozen, whatever the workers already held has reached the client by then."""
    last, since, end = count(), time.monotonic(), time.monotonic() + deadline
    while time.monotonic() < end:
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def step_frozen_engines(procs: list[Proc], done: Callable[[], bool], count: Callable[[], int],
                        max_slice: float = 0.05, deadline: float = 300.0) -> None:
    """The engines under `procs` are frozen; thaw them for a short slice at a time, freezing them
    again before the client is read, until `done()`. They are frozen on return.

    Judging "mid-stream" from the client while the engine runs races on a fast box (the tiny
    model finishes thousands of tokens between two looks): here nothing advances while the
    client is read. A stopped engine resumes where it stopped, so short slices add up on a slow
    box too; the slice (at most 5 ms first) grows while `count()` does not move, to at most
    `max_slice`, and drops back to the first once it moves. The refreeze must be prompt: the
    pids are found once (walking /proc between slices, in a process whose other thread was busy
    reading the streams, left the engine running for seconds) and this thread takes the GIL back
    quickly. On failure the engines are thawed."""
    pids = [pid for p in procs for pid in freeze_engine(p)]
    slice_s, end = min(0.005, max_slice), time.monotonic() + deadline
    switch = sys.getswitchinterval()
    try:
        while not done():
            assert time.monotonic() < end, f"the streams never got under way ({count()} chunks)"
            before = count()
            sys.setswitchinterval(1e-5)  # the readers' thread must not hold the refreeze up
            try:
                signal_all(pids, signal.SIGCONT)
                time.sleep(slice_s)
                signal_all(pids, signal.SIGSTOP)
            finally:
                sys.setswitchinterval(switch)
            # Grow the slice only while nothing moves; once output flows, every slice is the
            # shortest again, so the slice that starts the streams is the only long one.
            slice_s = min(slice_s * 1.5, max_slice) if settled(count) == before else min(0.005, max_slice)
    except BaseException:
        signal_all(pids, signal.SIGCONT)
        raise


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@contextmanager
def frozen_engine(proc: Proc) -> Iterator[None]:
    """`freeze_engine` for the block. What the worker's handler does meanwhile is the worker's alone."""
    pids = freeze_engine(proc)
    try:
        yield
    finally:
        thaw_engine(pids)


@contextmanager
def worker_beside_reference(tmp: Path, model_dir: Path, python: Path, worker_args: list[str],
                            start_reference: Callable[[Path], subprocess.Popen]
                            ) -> Iterator[tuple[VllmCluster, subprocess.Popen]]:
    """A frontend and one `dynamo.vllm` worker (`worker_args`) while vLLM's own offline run,
    `start_reference(log_path)`, computes the reference beside it; all reaped on exit."""
    cluster = VllmCluster(tmp, model_dir, python)
    reference = None
    try:
        worker = cluster.vllm_worker(*worker_args, wait=False)
        reference = start_reference(tmp / "reference.log")
        cluster.frontend()
        wait_healthy(worker, timeout=600)  # a loaded 2-core box can take minutes to start vLLM
        cluster.wait_workers(MODEL, 1)
        yield cluster, reference
    finally:
        if reference is not None and reference.poll() is None:  # failed before reading it: reap its group
            os.killpg(reference.pid, signal.SIGKILL)
        cluster.stop()


def start_offline(python: Path, script: str, args: list[str], log_path: Path) -> subprocess.Popen:
    """Start one of this folder's offline `vllm.LLM` scripts; read its answer with `reference_result`."""
    env = {**os.environ, **ENGINE_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    with open(log_path, "wb") as log:
        return subprocess.Popen([str(python), str(Path(__file__).with_name(script)), *args], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=log, start_new_session=True)


def offline_reference(python: Path, model_dir: Path, prompts: list[list[int]], max_tokens: int,
                      log_path: Path, lora_dir: Path | None = None) -> subprocess.Popen:
    """Start vLLM's own offline greedy generation (`vllm.LLM`) for `prompts`; read with `reference_result`."""
    return start_offline(python, "offline_reference.py", [str(model_dir), json.dumps(prompts), str(max_tokens),
                         str(BLOCK_SIZE), str(MAX_MODEL_LEN), *([str(lora_dir)] if lora_dir else [])], log_path)


def reference_result(proc: subprocess.Popen, timeout: float = 240) -> list[list[int]]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:  # vLLM's engine/worker children can outlive the script: reap the whole group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"offline reference failed (rc {proc.returncode})"
    return json.loads(out.decode().strip().splitlines()[-1])

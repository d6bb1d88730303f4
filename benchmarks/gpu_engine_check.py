"""GPU check of the sglang, trtllm and vllm workers against their REAL engines.

For each engine that is importable here (and a CUDA GPU is visible), it starts
`python -m dynamo.frontend --router-mode kv` and the engine's worker, waits for the
harness's `Worker ... initialized` log line, and checks through the OpenAI API:
  agg     one aggregated worker: a streamed chat completion (tokens arrive in several
          chunks), a non-streamed completion, a prompt beyond the context -> 400, a client
          disconnect mid-stream -> the worker's in-flight gauge returns to 0, and KV events
          relayed (the worker's `dynamo_<engine>_kv_events_relayed` gauge > 0);
  disagg  (--disagg) a prefill and a decode worker on the same GPU (each given a share
          of its memory): the frontend's remote-prefill counter goes up and the answer
          streams.
It prints one table row per engine x mode: ok / FAILED (reason) / not run (why).
Nothing is claimed for an engine that is not installed: its row says "not run".

    python benchmarks/gpu_engine_check.py --model Qwen/Qwen3-0.6B [--engines sglang trtllm vllm] [--disagg]

The engines' own Python must see this checkout (`PYTHONPATH=$PWD`); use `--python ENGINE=PATH`
when an engine lives in another venv (e.g. `--python vllm=.venv-vllm/bin/python`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dynamo.runtime.net import free_port  # noqa: E402

READY = re.compile(r"Worker \S+ initialized \(instance [0-9a-f]+\)")
MEMORY_SHARE = {"sglang": ["--mem-fraction-static", "0.35"], "trtllm": ["--free-gpu-memory-fraction", "0.35"],
                "vllm": ["--gpu-memory-utilization", "0.35"]}


def worker_cmd(engine: str, python: str, model: str, role: str, bootstrap: int) -> list[str]:
    base = [python, "-m", f"dynamo.{engine}"]
    if engine == "sglang":
        cmd = base + ["--model-path", model, "--page-size", "16"]
        if role != "agg":
            cmd += ["--disaggregation-mode", role, "--disaggregation-transfer-backend", "nixl",
                    "--disaggregation-bootstrap-port", str(bootstrap), "--port", str(free_port())]
        return cmd
    if engine == "trtllm":
        cmd = base + ["--model-path", model, "--publish-kv-events", "--disaggregation-mode", role]
        if role != "agg":
            extra = Path(tempfile.mkdtemp()) / "engine.yaml"
            extra.write_text("cache_transceiver_config:\n  backend: NIXL\ndisable_overlap_scheduler: true\n")
            cmd += ["--extra-engine-args", str(extra)]
        return cmd
    return base + ["--model", model, "--disaggregation-mode", role, "--kv-transfer-backend", "nixl"]


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.procs, self.logs = tmp, [], []
        self.port = free_port()
        self.env = {**os.environ, "DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(tmp / "kv"),
                    "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}

    def start(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> Path:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as fh:
            self.procs.append(subprocess.Popen(cmd, cwd=REPO, env={**self.env, **(extra_env or {})}, stdout=fh,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        self.logs.append(log)
        return log

    def frontend(self) -> None:
        self.start("frontend", [sys.executable, "-m", "dynamo.frontend", "--http-host", "127.0.0.1",
                                "--http-port", str(self.port), "--router-mode", "kv"])

    def wait_worker(self, log: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY.search(log.read_text(errors="replace")):
                return
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a process exited while starting; see {log}")
            time.sleep(1)
        raise TimeoutError(f"no 'Worker ... initialized' line in {log} after {timeout:.0f}s")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def system_env() -> tuple[dict[str, str], int]:
    port = free_port()
    return {"DYN_SYSTEM_PORT": str(port)}, port


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


def check_agg(stack: Stack, model: str, system_port: int, engine: str) -> str:
    url = f"http://127.0.0.1:{stack.port}/v1"
    chat = {"model": model, "messages": [{"role": "user", "content": "Count from one to twenty."}],
            "max_tokens": 48, "stream": True}
    chunks, started, first = 0, time.monotonic(), None
    with httpx.stream("POST", f"{url}/chat/completions", json=chat, timeout=120) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks += 1
                first = first or time.monotonic() - started
    if chunks < 3:
        return f"FAILED (only {chunks} stream chunks)"
    done = httpx.post(f"{url}/completions", json={"model": model, "prompt": "Hello", "max_tokens": 8}, timeout=120)
    if done.status_code != 200 or not done.json()["choices"][0]["text"]:
        return f"FAILED (completion {done.status_code})"
    long = httpx.post(f"{url}/completions", json={"model": model, "prompt": "x " * 300_000, "max_tokens": 4},
                      timeout=120)
    if long.status_code != 400:
        return f"FAILED (over-long prompt gave {long.status_code}, want 400)"
    with httpx.stream("POST", f"{url}/chat/completions", json={**chat, "max_tokens": 2000}, timeout=120) as resp:
        next(resp.iter_lines())  # one chunk, then the client goes away
    deadline = time.monotonic() + 30
    while metric(system_port, f"dynamo_{engine}_handler_inflight_requests") and time.monotonic() < deadline:
        time.sleep(0.5)
    if metric(system_port, f"dynamo_{engine}_handler_inflight_requests"):
        return "FAILED (disconnected request still in flight after 30s)"
    relayed = metric(system_port, f"dynamo_{engine}_kv_events_relayed")
    if relayed <= 0:
        return f"FAILED (no KV events relayed: {relayed})"
    return f"ok (TTFT {first:.2f}s, {chunks} chunks, {relayed:.0f} KV events)"


def remote_prefills(url: str) -> float:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if "_remote_prefills_total" in line
               and not line.startswith("#"))


def check_disagg(stack: Stack) -> str:
    url = f"http://127.0.0.1:{stack.port}"
    before = remote_prefills(url)
    resp = httpx.post(f"{url}/v1/completions", json={"model": stack.model, "prompt": "The capital of France is",
                                                     "max_tokens": 16}, timeout=300)
    after = remote_prefills(url)
    if resp.status_code != 200:
        return f"FAILED ({resp.status_code}: {resp.text[:200]})"
    if after <= before:
        return "FAILED (answered, but no remote prefill was counted)"
    return f"ok ({resp.json()['choices'][0]['text']!r})"


def run(engine: str, python: str, args: argparse.Namespace, mode: str) -> str:
    tmp = Path(tempfile.mkdtemp(prefix=f"gpu-{engine}-{mode}-"))
    stack = Stack(tmp)
    stack.model = args.model
    try:
        stack.frontend()
        if mode == "agg":
            env, sys_port = system_env()
            log = stack.start(f"{engine}-agg", worker_cmd(engine, python, args.model, "agg", 0), env)
            stack.wait_worker(log, args.timeout)
            return check_agg(stack, args.model, sys_port, engine)
        bootstrap = free_port()
        for role in ("decode", "prefill"):
            log = stack.start(f"{engine}-{role}", worker_cmd(engine, python, args.model, role, bootstrap)
                              + MEMORY_SHARE[engine])
            stack.wait_worker(log, args.timeout)
        return check_disagg(stack)
    except Exception as exc:
        return f"FAILED ({exc}; logs in {tmp})"
    finally:
        stack.stop()


def available(engine: str, python: str) -> str | None:
    module = {"sglang": "sglang", "trtllm": "tensorrt_llm", "vllm": "vllm"}[engine]
    probe = f"import torch, {module}; assert torch.cuda.is_available(), 'no CUDA GPU visible'"
    try:
        proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1][:120]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="Qwen/Qwen3-0.6B")
    parser.add_argument("--engines", nargs="*", default=["sglang", "trtllm", "vllm"])
    parser.add_argument("--python", nargs="*", default=[], help="ENGINE=PATH interpreters")
    parser.add_argument("--disagg", action="store_true", help="also run prefill + decode on the GPU")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a worker may take to start")
    args = parser.parse_args()
    pythons = dict(item.split("=", 1) for item in args.python)
    rows = []
    for engine in args.engines:
        python = pythons.get(engine, sys.executable)
        why = available(engine, python) if importlib.util.find_spec("httpx") else "httpx missing"
        for mode in ("agg", "disagg") if args.disagg else ("agg",):
            result = f"not run ({why})" if why else run(engine, python, args, mode)
            rows.append((engine, mode, result))
            print(f"{engine:7} {mode:7} {result}", flush=True)
    print("\n| engine | mode | result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all(r[2].startswith(("ok", "not run")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

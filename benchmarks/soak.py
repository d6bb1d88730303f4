"""Soak: mixed streaming load for a long time while workers are killed and restarted.

Starts `python -m dynamo.frontend --migration-limit 3` and `--workers` mockers on file
discovery (real processes), runs `--clients` streaming clients (completions of mixed
lengths, some cancelled half-way), and every `--kill-every` seconds SIGKILLs one worker
(round robin) and starts a replacement. Every `--sample` seconds it records the
frontend's RSS, open file descriptors and threads, and the workers' RSS. Prints the
curve and a summary: requests finished / failed (a failure is any stream that did not
end whole), migrations, and what was left behind (descriptors, threads, processes).

    .venv/bin/python benchmarks/soak.py [--minutes 20] [--kill-every 180]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import print_table
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster, http_get, metric_value

MODEL = "tiny"


def proc_status(pid: int) -> dict[str, float]:
    out = {"rss": 0.0, "threads": 0.0, "fds": 0.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                out["threads"] = float(line.split()[1])
        out["fds"] = float(len(os.listdir(f"/proc/{pid}/fd")))
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Traffic:
    """Streaming clients: 70% run to the end, 30% are closed after a few chunks (cancellation)."""

    def __init__(self, base_url: str, clients: int) -> None:
        self.base_url, self.clients = base_url, clients
        self.stop = threading.Event()
        self.ok = self.cancelled = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(300)

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.base_url, timeout=120) as http:
            while not self.stop.is_set():
                max_tokens = rng.choice((8, 32, 128, 256))
                cancel = rng.random() < 0.3
                prompt = " ".join(rng.choice(("alpha", "beta", "gamma", "delta")) for _ in range(rng.randrange(4, 200)))
                outcome = self.one(http, prompt, max_tokens, cancel)
                with self.lock:
                    if outcome == "ok":
                        self.ok += 1
                    elif outcome == "cancelled":
                        self.cancelled += 1
                    else:
                        self.failures.append(outcome)

    def one(self, http: httpx.Client, prompt: str, max_tokens: int, cancel: bool) -> str:
        body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}}
        try:
            with http.stream("POST", "/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    return f"status {resp.status_code}: {resp.read()[:200]!r}"
                chunks, usage = 0, None
                for line in resp.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    if "error" in data:
                        return f"error event: {data['error']}"
                    usage = data.get("usage") or usage
                    chunks += 1
                    if cancel and chunks >= 3:
                        return "cancelled"
                if usage is None or usage["completion_tokens"] != max_tokens:
                    return f"short stream: {usage}"
                return "ok"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--kill-every", type=float, default=180.0, help="seconds between worker kills")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--speedup", default="20", help="mocker speedup ratio")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dynamo-soak-"))
    model = build_tiny_model(tmp / "tiny", weights=False)
    cluster = Cluster(tmp, model, "file", {"DYN_LOG": "warn"})
    worker_args = ("--speedup-ratio", args.speedup)
    try:
        workers = [cluster.mocker(*worker_args) for _ in range(args.workers)]
        frontend = cluster.frontend("--migration-limit", "3")
        cluster.wait_workers(MODEL, args.workers)
        traffic = Traffic(cluster.base_url, args.clients)
        traffic.start()
        start = time.monotonic()
        end = start + args.minutes * 60
        next_kill, next_sample, victim = start + args.kill_every, start, 0
        rows, kills = [], 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                fe = proc_status(frontend.pid)
                rss = [proc_status(w.pid)["rss"] for w in workers]
                rows.append((f"{(now - start) / 60:.1f}", fe["rss"], int(fe["fds"]), int(fe["threads"]),
                             " / ".join(f"{r:.0f}" for r in rss), traffic.ok, traffic.cancelled,
                             len(traffic.failures)))
                next_sample += args.sample
            if now >= next_kill:
                old = workers[victim]
                old.kill()
                old.popen.wait(30)
                workers[victim] = cluster.mocker(*worker_args)
                cluster.wait_workers(MODEL, args.workers, timeout=120)
                victim, kills = (victim + 1) % len(workers), kills + 1
                next_kill += args.kill_every
            time.sleep(0.5)
        traffic.finish()
        time.sleep(2)
        fe = proc_status(frontend.pid)
        rows.append(("end (idle)", fe["rss"], int(fe["fds"]), int(fe["threads"]),
                     " / ".join(f"{proc_status(w.pid)['rss']:.0f}" for w in workers), traffic.ok,
                     traffic.cancelled, len(traffic.failures)))
        text = http_get(cluster.base_url + "/metrics")[1].decode()
        name = "dynamo_frontend_model_migration_total"
        ongoing = metric_value(text, name, {"migration_type": "ongoing_request"}) or 0
        fresh = metric_value(text, name, {"migration_type": "new_request"}) or 0
        inflight = metric_value(text, "dynamo_frontend_inflight_requests") or 0
        print_table(f"soak: {args.minutes:g} min, {args.clients} streaming clients, {args.workers} mockers "
                    f"(speedup {args.speedup}), one SIGKILLed + restarted every {args.kill_every:g} s",
                    ("minute", "frontend RSS MB", "frontend fds", "frontend threads", "worker RSS MB",
                     "finished", "cancelled", "failed"), rows)
        stray = [p for p in descendants(os.getpid()) if p not in {w.pid for w in workers} | {frontend.pid}]
        print_table("soak: summary", ("worker kills", "requests finished", "cancelled by client", "failed",
                                      "streams migrated", "retried elsewhere before streaming",
                                      "frontend in-flight at end", "stray processes"),
                    [(str(kills), traffic.ok, traffic.cancelled, len(traffic.failures), ongoing, fresh, inflight,
                      len(stray))])
        for failure in traffic.failures[:10]:
            print("failure:", failure)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()

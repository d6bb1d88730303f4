"""Does one big request stall the others? Frontend + one mocker (defaults), real processes.

A probe client sends a 4-token streaming chat ("hi") every `--tick` seconds on a fresh
connection and records its TTFT, first alone (baseline), then while chat requests with
12–40 MB prompts arrive one after another. Prints per-huge-request status / time to
answer / error code, the probe's TTFT p50/p99/max in both windows (the worst stall the
event loop let through), the frontend's RSS before / peak / after (sampled from /proc),
and how fast an over-limit body gets its 413 however it is sent (declared Content-Length
with no body, declared and streamed, chunked), and whether the server then closes.

    .venv/bin/python benchmarks/stall_probe.py [--sizes-mb 12 24 40] [--anchor] [--sender-cpu 1]

`--sender-cpu N` runs the huge-prompt sender on CPU N and everything else (frontend,
mocker, the "hi" probe) on the other CPUs: on a small box this separates "the server
stalls small requests" from "the load generator takes the CPU they need" (in production
the client that uploads 40 MB is another machine).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import pct, print_table
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

HI = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)


async def probe_once(url: str, out: list) -> None:
    start = time.perf_counter()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.post(url, json=HI, timeout=aiohttp.ClientTimeout(total=120)) as resp:
                async for _ in resp.content.iter_any():
                    out.append(time.perf_counter() - start)
                    break
                await resp.read()
    except Exception:  # a failed probe counts as a stall of its full duration
        out.append(time.perf_counter() - start)


async def ticker(url: str, tick: float, stop: asyncio.Event, out: list) -> None:
    while not stop.is_set():
        task = asyncio.ensure_future(probe_once(url, out))
        try:
            await asyncio.wait_for(stop.wait(), tick)
        except asyncio.TimeoutError:
            pass
        await task


def huge_body(mb: int) -> bytes:
    text = "hello world, this is filler text for a very large prompt. " * (mb * 1024 * 1024 // 58)
    return json.dumps({"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": 4}).encode()


SENDER_CPU: int | None = None


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` (affinity is per thread on Linux)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def huge_request(port: int, mb: int, body: bytes, timeout: float) -> tuple:
    """Blocking, in a thread: the probe's event loop must not be the one stalled by sending."""
    if SENDER_CPU is not None:
        os.sched_setaffinity(0, {SENDER_CPU})  # this thread only
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        raw, status = resp.read(), resp.status
    except TimeoutError:
        return str(mb), "timeout", time.perf_counter() - start, ""
    except OSError as exc:
        return str(mb), type(exc).__name__, time.perf_counter() - start, ""
    finally:
        conn.close()
    try:
        err = json.loads(raw)
        err = err.get("error", err)
        code = str(err.get("code") or err.get("message", ""))[:40] if isinstance(err, dict) else ""
    except ValueError:
        code = raw[:40].decode(errors="replace")
    return str(mb), status, time.perf_counter() - start, code


async def stall_phase(url: str, port: int, sizes: list[int], tick: float, baseline_s: float, timeout: float):
    bodies = [(mb, huge_body(mb)) for mb in sizes]
    base: list[float] = []
    stop = asyncio.Event()
    task = asyncio.ensure_future(ticker(url, tick, stop, base))
    await asyncio.sleep(baseline_s)
    stop.set()
    await task
    loaded: list[float] = []
    stop = asyncio.Event()
    task = asyncio.ensure_future(ticker(url, tick, stop, loaded))
    rows = []
    for mb, body in bodies:
        rows.append(await asyncio.to_thread(huge_request, port, mb, body, timeout))
    await asyncio.sleep(tick * 3)
    stop.set()
    await task
    return base, loaded, rows


def over_limit(port: int, mode: str, limit_bytes: int) -> tuple:
    """Send an over-limit body; return (status line, seconds to answer, closed by server?)."""
    start = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    declared = limit_bytes + 1024 * 1024
    head += b"Transfer-Encoding: chunked\r\n\r\n" if mode == "chunked" else f"Content-Length: {declared}\r\n\r\n".encode()
    sock.sendall(head)
    answered: list = []
    reader = threading.Thread(target=_read_answer, args=(sock, start, answered), daemon=True)
    reader.start()
    if mode != "headers only":
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < declared + 1024 * 1024 and not answered and time.perf_counter() - start < 60:
                sock.sendall(b"10000\r\n" + chunk + b"\r\n" if mode == "chunked" else chunk)
                sent += len(chunk)
        except OSError:
            pass
    reader.join(30)
    sock.close()
    if not answered:
        return mode, "no answer", time.perf_counter() - start, "-"
    status, seconds, closed = answered[0], answered[1], answered[2] if len(answered) > 2 else "no"
    return mode, status, seconds, closed


def _read_answer(sock: socket.socket, start: float, answered: list) -> None:
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                answered.extend(["closed without answer", time.perf_counter() - start, "yes"])
                return
            data += chunk
        answered.extend([data.split(b"\r\n", 1)[0].decode(), time.perf_counter() - start])
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 10:
            if not sock.recv(65536):
                answered.append(f"yes, {time.perf_counter() - start:.2f} s")
                return
        answered.append("no (open 10 s later)")
    except OSError as exc:
        if not answered:
            answered.extend([f"reset ({type(exc).__name__})", time.perf_counter() - start])
        answered.append(f"yes (reset), {time.perf_counter() - start:.2f} s")


def loop_lag(base_url: str, anchor: bool) -> dict[str, float] | None:
    """Our frontend's lag histogram: samples at or above each bound (the anchor has none)."""
    if anchor:
        return None
    text = http_get(base_url + "/metrics")[1].decode()
    name = "dynamo_frontend_event_loop_lag_seconds_bucket"
    total = metric_value(text, name, {"le": "+Inf"}) or 0.0
    out = {"+Inf": total}
    below = {"0.01": "0.005", "0.05": "0.025", "0.1": "0.05", "0.25": "0.1"}
    for key, le in below.items():
        out[key] = total - (metric_value(text, name, {"le": le}) or 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[12, 24, 40])
    parser.add_argument("--tick", type=float, default=0.05, help="seconds between probe requests")
    parser.add_argument("--baseline", type=float, default=4.0, help="seconds of probes before the huge ones")
    parser.add_argument("--timeout", type=float, default=60.0, help="per huge request")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the RSS 'after' sample")
    parser.add_argument("--anchor", action="store_true", help="run NVIDIA Dynamo 1.6.1 from .venv-anchor instead")
    parser.add_argument("--sender-cpu", type=int, default=None,
                        help="run the huge-prompt sender on this CPU and everything else on the others")
    args = parser.parse_args()
    global SENDER_CPU
    SENDER_CPU = args.sender_cpu
    rest = (os.sched_getaffinity(0) - {args.sender_cpu}) if args.sender_cpu is not None else None
    if rest is not None:
        os.sched_setaffinity(0, rest)
    repo = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="dynamo-stall-"))
    model = build_tiny_model(tmp / "tiny", weights=False)
    env = {"DYN_LOG": "warn"}
    python = None
    if args.anchor:
        python = str(repo / ".venv-anchor/bin/python")
        if not Path(python).exists():
            python = "/work/main/.venv-anchor/bin/python"
        env.update(DYN_TCP_RPC_HOST="127.0.0.1", DYN_EVENT_PLANE_HOST="127.0.0.1",
                   DYN_TCP_RESPONSE_STREAM_HOST="127.0.0.1", DYN_SYSTEM_HOST="127.0.0.1", DYN_REQUEST_PLANE="tcp",
                   PYTHONPATH="")  # its own `dynamo` package, not this checkout's
    who = "NVIDIA Dynamo 1.6.1" if args.anchor else "ours"
    cluster = Cluster(tmp, model, "file", env, python=python)
    try:
        cluster.mocker("--speedup-ratio", "1000", system_port=False)
        frontend = cluster.frontend()
        wait_until(lambda: cluster.models() == ["tiny"], 120, "model listed")
        if rest is not None:
            for proc in cluster.procs:
                pin_process(proc.pid, rest)
        url = cluster.base_url + "/v1/chat/completions"
        asyncio.run(stall_phase(url, cluster.http_port, [], args.tick, 1.0, args.timeout))  # warm up
        lag0 = loop_lag(cluster.base_url, args.anchor)
        before = rss_mb(frontend.pid)
        sampler = RssSampler(frontend.pid)
        sampler.start()
        base, loaded, rows = asyncio.run(stall_phase(url, cluster.http_port, args.sizes_mb, args.tick, args.baseline, args.timeout))
        time.sleep(args.settle)
        sampler.done.set()
        sampler.join()
        after = rss_mb(frontend.pid)
        lag1 = loop_lag(cluster.base_url, args.anchor)
        print_table(f"{who}: chat requests with huge prompts (tiny model, 2048-token context), one at a time",
                    ("prompt MB", "status", "seconds to answer", "error code"), rows)
        print_table(f"{who}: TTFT of a 4-token 'hi' stream sent every {args.tick * 1e3:.0f} ms (fresh connection)",
                    ("window", "probes", "p50 ms", "p99 ms", "max ms"),
                    [(name, len(v), pct(v, 0.5) * 1e3, pct(v, 0.99) * 1e3, max(v) * 1e3)
                     for name, v in (("alone", base), ("while huge prompts arrive", loaded))])
        print_table(f"{who}: frontend RSS", ("before MB", "peak MB", f"after +{args.settle:.0f} s MB"),
                    [(f"{before:.0f}", sampler.peak, after)])
        if lag0 is not None and lag1 is not None:
            print_table(f"{who}: frontend event-loop lag samples (10 ms timer) during the huge-prompt window",
                        ("samples", "late >= 10 ms", ">= 50 ms", ">= 100 ms", ">= 250 ms"),
                        [tuple(str(int(lag1[k] - lag0[k])) for k in ("+Inf", "0.01", "0.05", "0.1", "0.25"))])
        limit = 192 * 1024 * 1024
        rows413 = [over_limit(cluster.http_port, mode, limit) for mode in ("headers only", "streamed", "chunked")]
        print_table(f"{who}: body over the 192 MB default limit", ("sent as", "answer", "seconds", "server closed"),
                    rows413)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()

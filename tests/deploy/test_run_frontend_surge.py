"""A frontend rolled out under `run` with no gap and no lost request: `run` binds the frontend service's
listening socket once and every replica inherits it (systemd's LISTEN_FDS convention, `listeners.py`), so an
apply that changes the frontend surges it (the new replica serves beside the old one on the one kernel queue,
then the old one is retired); a frontend on an inherited socket stops accepting at once on SIGTERM (no 503
window), closes its idle keep-alive connections, and lets its admitted streams finish.

Real processes and sockets throughout: `run` and the official `openai` client for the rollout; a frontend
started through `run`'s exec wrapper on a socket this test holds, a mocker and httpx for the SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from dynamo.deploy.listeners import WRAPPER, bind
from tests.deploy.helpers import started_run
from tests.deploy.manifests import mocker_graph
from tests.deploy.test_run_apply import post_apply, rollout_done
from tests.fixtures.load import stream_completion
from tests.fixtures.procs import Cluster, http_get, reap, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
MODEL = "tiny-llama"


def graph() -> dict:
    doc = mocker_graph(worker={"main": {"args": [
        "--model-path", "/opt/models/tiny-llama", "--model-name", MODEL, "--speedup-ratio", "10"]}})
    # the old frontend's drain ends with its last stream: retired in seconds, not the default 60
    doc["spec"]["services"]["Frontend"]["extraPodSpec"]["terminationGracePeriodSeconds"] = 20
    return doc


class Traffic(threading.Thread):
    """Two clients (the official `openai` client, one keep-alive connection pool each, no retries: a failure
    shows) sending one request after another until stopped, one streaming, one not; each outcome is kept with
    the time it ended."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.halt = port, threading.Event()
        self.done: list[float] = []
        self.failed: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def _client(self, stream: bool) -> None:
        import openai

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="unused", max_retries=0,
                               timeout=60)
        i = 0
        while not self.halt.is_set():
            try:
                messages = [{"role": "user", "content": f"surge {stream} {i} lorem ipsum"}]
                if stream:
                    chunks = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, stream=True)
                    assert any(c.choices and c.choices[0].finish_reason for c in chunks), "no finish reason"
                else:
                    assert client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8).choices
                with self.lock:
                    self.done.append(time.monotonic())
            except Exception as exc:  # every kind of failure counts
                with self.lock:
                    self.failed.append((time.monotonic(), repr(exc)))
            i += 1
        client.close()

    def run(self) -> None:
        other = threading.Thread(target=self._client, args=(False,), daemon=True)
        other.start()
        self._client(True)
        other.join(60)

    def stop(self) -> None:
        self.halt.set()
        self.join(90)

    def longest_gap(self, since: float, until: float) -> tuple[float, float]:
        """The longest time in [since, until] without a request completing, and when it began (from `since`)."""
        ends = [since, *sorted(t for t in self.done if since <= t <= until), until]
        return max((b - a, a - since) for a, b in zip(ends, ends[1:]))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    yield from started_run(tmp_path_factory.mktemp("surge"), graph(), tiny_model, {"Frontend": 1, "MockerWorker": 1},
                           MODEL)


def test_a_changed_frontend_surges_with_no_failed_request_and_no_gap(run):
    (old,) = run.replicas("Frontend")
    assert old["listen_port"] == run.port and old["http_port"] != run.port, old
    doc = graph()
    doc["spec"]["services"]["Frontend"]["envs"] = [{"name": "ROLLOUT_MARK", "value": "2"}]
    traffic = Traffic(run.port)
    traffic.start()
    try:
        time.sleep(2)
        began = time.monotonic()
        status, body = post_apply(run, doc)
        assert status == 200 and body["applied"]["replaced"]["Frontend"] == "RollingUpdate", body
        state = rollout_done(run)["services"]["Frontend"]
        wait_until(lambda: [r["pid"] for r in run.replicas("Frontend")] != [old["pid"]]
                   and len(run.replicas("Frontend")) == 1, 60, "the old frontend retired")
        ended = time.monotonic()
        time.sleep(2)
    finally:
        traffic.stop()
    (new,) = run.replicas("Frontend")
    assert new["pid"] != old["pid"] and new["state"] == "ready", new
    assert new["listen_port"] == run.port and new["generation"] == state["generation"]
    assert state["state"] == "complete" and (state["rollout"]["max_surge"], state["rollout"]["max_unavailable"]) \
        == (1, 0), state
    sent = len(traffic.done) + len(traffic.failed)
    assert traffic.failed == [] and traffic.done, traffic.failed[:5]
    gap, at = traffic.longest_gap(began, ended)
    assert gap < 3, f"no request completed for {gap:.1f}s during the rollout (from {at:.1f}s after the apply)"
    print(f"\nfrontend surge: {sent} requests, {len(traffic.failed)} failed, longest time without an answer "
          f"{gap:.2f}s ({at:.1f}s after the apply), apply to old frontend gone {ended - began:.1f}s")


def test_a_request_sent_while_the_frontend_restarts_waits_for_it_on_the_socket(run):
    """`run` holds the socket while its frontend crashes and restarts: a connection made meanwhile waits in the
    listen queue for the restarted replica (same port, no bind race) instead of being refused."""
    import openai

    (old,) = run.replicas("Frontend")
    os.kill(old["pid"], signal.SIGKILL)

    def crashed() -> bool:  # reaped by `run` (backoff), or already started again
        (rep,) = run.replicas("Frontend")
        return rep["state"] == "backoff" or rep["pid"] != old["pid"]

    wait_until(crashed, 30, "the crash seen by run", interval=0.05)
    began = time.monotonic()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{run.port}/v1", api_key="unused", max_retries=0, timeout=90)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "queued"}], max_tokens=2)
    client.close()
    assert reply.choices[0].message.content is not None
    (new,) = run.replicas("Frontend")
    assert new["pid"] != old["pid"] and new["restarts"] == old["restarts"] + 1 and new["listen_port"] == run.port
    print(f"\nfrontend crash: a request sent while it restarted was answered after {time.monotonic() - began:.1f}s")


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_only_the_frontend_inherits_its_services_sockets(run):
    """`run` hands the service's socket (fd 3) and the replica's own (fd 4) to the frontend alone: a worker
    holding a copy would keep the port listening (and its queue filling) after every frontend is gone."""
    (frontend,) = run.replicas("Frontend")
    shared, own = (os.readlink(f"/proc/{frontend['pid']}/fd/{fd}") for fd in (3, 4))
    assert shared.startswith("socket:") and own.startswith("socket:"), (shared, own)
    workers = run.replicas("MockerWorker")
    assert workers
    for worker in workers:
        assert not {shared, own} & _socket_inodes(worker["pid"]), worker


# ----- one frontend on an inherited socket, SIGTERMed -------------------------------------------------------

def start_frontend(cluster: Cluster, shared: socket.socket, name: str, procs: list,
                   env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """A frontend started as `run` starts one: through the exec wrapper, the service's socket and one of its own
    (its URL is returned with it, once it is live)."""
    own = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{own.getsockname()[1]}"
    fds = (shared.fileno(), own.fileno())
    log = open(cluster.tmp / f"{name}.log", "wb")
    argv = [sys.executable, "-I", "-S", WRAPPER, *map(str, fds), "--", sys.executable, "-m", "dynamo.frontend",
            "--http-host", "127.0.0.1", "--http-port", str(shared.getsockname()[1])]
    proc = subprocess.Popen(argv, pass_fds=fds, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **cluster.env, "PYTHONUNBUFFERED": "1", "LISTEN_FDNAMES": "http:replica",
                                 **(env or {})})
    procs.append(proc)
    log.close()
    own.close()  # the frontend's now
    wait_until(lambda: proc.poll() is not None or http_get(url + "/live")[0] == 200, 60, f"{name} /live")
    assert proc.poll() is None, (cluster.tmp / f"{name}.log").read_text()
    return proc, url


def idle_keep_alive(port: int) -> socket.socket:
    """A connection that had one answer and now waits, kept alive, for its next request."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"GET /live HTTP/1.1\r\nhost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = conn.recv(4096)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    return conn


def _length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _answer(conn: socket.socket) -> bytes:
    """Everything the server sends on `conn` until it closes it (a reset reads as the bytes so far)."""
    conn.settimeout(10)
    data = b""
    try:
        while chunk := conn.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_a_request_sent_on_a_fresh_or_just_answered_connection_during_the_hand_off_is_answered(tiny_model, tmp_path):
    """The hand-off closes only connections quiet for a while: a connection just made (its request not yet sent)
    and one whose answer just came (its next request a moment away) are served once more, with `Connection:
    close`, not dropped as uvicorn's shutdown drops every connection with no request under way."""
    cluster = Cluster(tmp_path, tiny_model, "file")
    shared = bind("127.0.0.1", 0)
    procs: list[subprocess.Popen] = []
    try:
        old, _ = start_frontend(cluster, shared, "old", procs)
        port = shared.getsockname()[1]
        fresh = socket.create_connection(("127.0.0.1", port), timeout=10)
        recent = idle_keep_alive(port)
        time.sleep(0.2)  # both accepted by the only replica
        old.send_signal(signal.SIGTERM)
        wait_until(lambda: "handing off" in (cluster.tmp / "old.log").read_text(), 10, "the hand-off", interval=0.02)
        for conn in (fresh, recent):
            conn.sendall(b"GET /live HTTP/1.1\r\nhost: x\r\n\r\n")
        answers = [_answer(conn) for conn in (fresh, recent)]
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower(), answers
        assert old.wait(30) == 0
    finally:
        for proc in procs:
            reap(proc)
        shared.close()
        cluster.stop()


def _requests_served(url: str) -> float:
    """The frontend's `requests_total`, all models and outcomes, from its own port's /metrics."""
    text = http_get(url + "/metrics")[1].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("dynamo_frontend_requests_total{"))


def test_a_frontend_on_an_inherited_socket_stops_accepting_at_once_and_finishes_its_stream(tiny_model, tmp_path):
    cluster = Cluster(tmp_path, tiny_model, "file")
    shared = bind("127.0.0.1", 0)
    procs: list[subprocess.Popen] = []
    try:
        cluster.mocker("--speedup-ratio", "0.5", model_name=MODEL)
        # a window of 60 s: a frontend that kept Dynamo's drain would still 503 and hold its connections
        old, _ = start_frontend(cluster, shared, "old", procs, {"DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "60"})
        port = shared.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: MODEL in http_get(url + "/v1/models")[1].decode(), 60, "the worker at the old frontend")
        idle = idle_keep_alive(port)  # the old one accepted it: the only one accepting yet
        seen: dict = {}

        def on_chunk(count: int) -> None:
            if count != 5 or seen:
                return
            _, new_url = start_frontend(cluster, shared, "new", procs)
            wait_until(lambda: MODEL in http_get(new_url + "/v1/models")[1].decode(), 60, "the worker at the new one")
            before = _requests_served(new_url)
            old.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            idle.settimeout(10)
            seen["idle"] = (idle.recv(4096), round(time.monotonic() - signalled, 1))  # b"": closed by the old one
            wait_until(lambda: "handing off" in (cluster.tmp / "old.log").read_text(), 10, "the hand-off")
            with httpx.Client(base_url=url, timeout=30) as client:  # through the shared socket: the new one answers
                seen["late"] = [client.post("/v1/completions", json={"model": MODEL, "prompt": f"late {i}",
                                                                       "max_tokens": 2}).status_code
                                for i in range(10)]
                seen["health"] = client.get("/health").status_code
            seen["served by the new one"] = _requests_served(new_url) - before  # not the old one still accepting

        # ~12 s of tokens: the new frontend starts and the old one is signalled while it runs
        finish, usage = stream_completion(url, 600, on_chunk, model=MODEL, timeout=180)
        assert finish == ["length"] and usage["completion_tokens"] == 600  # the admitted stream ran on, whole
        assert seen["idle"][0] == b"" and seen["idle"][1] < 5, seen
        assert seen["late"] == [200] * 10 and seen["health"] == 200 and seen["served by the new one"] == 10, seen
        assert old.wait(30) == 0
        log = (cluster.tmp / "old.log").read_text()
        assert "no longer accepting on the inherited socket(s); 1 request(s) in flight" in log, log[-3000:]
        assert "Timed out waiting for inflight" not in log and "ending 1 request(s)" not in log, log[-3000:]
        assert json.loads(http_get(url + "/health")[1])["status"] == "healthy"  # the new one serves on
    finally:
        for proc in procs:
            reap(proc)
        shared.close()
        cluster.stop()

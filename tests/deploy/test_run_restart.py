"""`spec.restart` on one real `run` of a mocker graph (a frontend, a worker), the tests in file order on the same
run: `python -m dynamo.deploy apply` of the file with a new restart id restarts the services one at a time in the
file's `order` (the worker, then the frontend: not alphabetical), each service's replicas replaced (new pids, the
apply's generation) before the next one starts, the frontend surged (RollingUpdate on the socket `run` holds) so
that two clients sending requests throughout see none fail, and the CLI returns only once the restart is
Completed; applying the same id again restarts nothing. Order and behaviour are asserted, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml

from tests.deploy.helpers import DeployRun
from tests.deploy.manifests import mocker_graph
from tests.deploy.test_run_frontend_surge import Traffic
from tests.fixtures.procs import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
MODEL = "tiny-llama"
SERVICES = ("Frontend", "MockerWorker")
GONE = ("stopping", "stopped")  # retired: draining, or its output still being read


def graph(restart_id: str) -> dict:
    doc = mocker_graph(worker={"main": {"args": [
        "--model-path", "/opt/models/tiny-llama", "--model-name", MODEL, "--speedup-ratio", "10"]}})
    doc["spec"]["services"]["MockerWorker"]["extraPodSpec"]["terminationGracePeriodSeconds"] = 20
    doc["spec"]["restart"] = {"id": restart_id, "strategy": {"type": "Sequential",
                                                             "order": ["MockerWorker", "Frontend"]}}
    return doc


def post_apply(run: DeployRun, doc: dict) -> tuple[int, dict]:
    req = urllib.request.Request(run.control + "/apply", data=json.dumps({"manifest": yaml.safe_dump(doc)}).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, json.load(resp)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("restart")
    path = tmp / "graph.yaml"
    path.write_text(yaml.safe_dump(graph("one")))
    deploy = DeployRun(path, tmp, "--model", str(tiny_model), "--no-status")
    deploy.manifest_dir = tmp
    try:
        deploy.wait_ready({"Frontend": 1, "MockerWorker": 1}, timeout=240)
        deploy.wait_workers(MODEL, 1, timeout=120)
        yield deploy
    finally:
        deploy.stop()
        assert deploy.survivors() == []


class Watcher(threading.Thread):
    """Polls /status until stopped: the order in which each service's pids change, the restart's inProgress
    as it moves, and every moment at which two services ran replicas of two generations at once."""

    def __init__(self, run: DeployRun) -> None:
        super().__init__(daemon=True)
        self.run_, self.halt = run, threading.Event()
        self.first = {s: {r["pid"] for r in run.replicas(s)} for s in SERVICES}
        self.changed: list[str] = []
        self.progress: list[tuple[str, ...]] = []
        self.overlaps: list[dict] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self._poll(self.run_.status())
            except Exception as exc:  # a status the watcher could not read fails the test
                self.errors.append(repr(exc))
            time.sleep(0.2)

    def _poll(self, status: dict) -> None:
        mixed = []
        for service in SERVICES:
            reps = [r for r in status["replicas"] if r["service"] == service]
            if {r["pid"] for r in reps} - self.first[service] and service not in self.changed:
                self.changed.append(service)
            if len({r["generation"] for r in reps if r["state"] not in GONE}) > 1:
                mixed.append(service)
        if len(mixed) > 1:
            self.overlaps.append(status)
        restart = status["rollout"].get("restart") or {}
        now = tuple(restart.get("inProgress", ()))
        if restart.get("phase") == "Restarting" and (not self.progress or self.progress[-1] != now):
            self.progress.append(now)


def test_a_new_restart_id_restarts_the_services_one_at_a_time_in_order(run):
    assert run.status()["rollout"]["restart"]["phase"] == "Completed"  # the first run restarted nothing
    path = run.manifest_dir / "two.yaml"
    path.write_text(yaml.safe_dump(graph("two")))
    watcher, traffic = Watcher(run), Traffic(run.port)
    watcher.start()
    traffic.start()
    try:
        time.sleep(1)
        done = subprocess.run([sys.executable, "-m", "dynamo.deploy", "apply", run.control, str(path),
                               "--timeout", "600"], cwd=REPO, capture_output=True, text=True, timeout=700)
        restart = run.status()["rollout"]["restart"]  # read as soon as the CLI returns
        time.sleep(1)
    finally:
        watcher.halt.set()
        watcher.join(30)
        traffic.stop()
    assert done.returncode == 0, done.stderr + run.log()
    assert restart["observedID"] == "two" and restart["phase"] == "Completed", restart  # --wait waited for it
    assert watcher.errors == []
    assert watcher.changed == ["MockerWorker", "Frontend"], (watcher.changed, run.log())
    assert watcher.progress == [("MockerWorker",), ("Frontend",)], watcher.progress
    assert watcher.overlaps == [], watcher.overlaps[0]
    frontend = run.status()["rollout"]["services"]["Frontend"]["rollout"]
    assert (frontend["strategy"], frontend["max_surge"], frontend["max_unavailable"]) == ("RollingUpdate", 1, 0)
    assert traffic.failed == [] and traffic.done, traffic.failed[:5]  # served throughout, the frontend's turn too
    print(f"\nrestart under traffic: {len(traffic.done)} requests, none failed")
    generation = run.status()["rollout"]["generation"]
    for service in SERVICES:
        reps = [r for r in run.replicas(service) if r["state"] not in GONE]
        assert [r["generation"] for r in reps] == [generation], reps
        assert not {r["pid"] for r in reps} & watcher.first[service]


def test_the_same_restart_id_applied_again_restarts_nothing(run):
    before = {r["pid"] for r in run.status()["replicas"] if r["state"] == "ready"}
    status, body = post_apply(run, graph("two"))
    assert status == 200, body
    assert "restart" not in body["applied"] and sorted(body["applied"]["unchanged"]) == list(SERVICES)
    time.sleep(3)
    after = run.status()
    assert {r["pid"] for r in after["replicas"] if r["state"] == "ready"} == before
    assert after["rollout"]["restart"]["phase"] == "Completed" and after["rollout"]["done"]

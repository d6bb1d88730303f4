"""`POST /apply` / `python -m dynamo.deploy apply` on one real `run` of a mocker graph (a frontend and two
worker replicas), the tests in file order on the same run, each starting from the state the one before
left (one run start is most of the module's time on 2 cores: run the module whole, not one test alone): an unchanged re-apply restarts nothing; a refused
change (the graph's name, its discovery) answers 409 and changes nothing; a changed worker env replaces
every worker (new pids) through a rolling update while a client sends requests all along, none failing;
a service added is started and removed is retired; a new plan whose replica never gets ready stalls with
the old replicas serving; a changed frontend surges with the workers, no request failing."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from tests.deploy.helpers import DeployRun, chat, started_run
from tests.deploy.manifests import mocker_graph
from tests.fixtures.procs import REPO, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
MODEL = "tiny-llama"


def base() -> dict:
    doc = mocker_graph(worker={"replicas": 2, "main": {"args": [
        "--model-path", "/opt/models/tiny-llama", "--model-name", MODEL, "--speedup-ratio", "10"]}})
    # a drain that ends when the last stream does: a retired worker is gone in seconds, not the default 60
    doc["spec"]["services"]["MockerWorker"]["extraPodSpec"]["terminationGracePeriodSeconds"] = 20
    return doc


def post_apply(run: DeployRun, *docs: dict, **extra) -> tuple[int, dict]:
    """POST /apply of a manifest of `docs` (the graph, and any HPAs, DynamoModels ... beside it)."""
    body = json.dumps({"manifest": yaml.safe_dump_all(docs), **extra}).encode()
    req = urllib.request.Request(run.control + "/apply", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def pids(run: DeployRun, service: str) -> set[int]:
    return {r["pid"] for r in run.replicas(service)}


def rollout_done(run: DeployRun, timeout: float = 180) -> dict:
    def done() -> bool:
        return run.status()["rollout"]["done"]
    wait_until(done, timeout, "the rollout done", interval=0.5)
    return run.status()["rollout"]


class Client(threading.Thread):
    """Requests one after another (two at a time) until stopped; every failure is kept."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.ok, self.failed, self.halt = port, 0, [], threading.Event()

    def run(self) -> None:
        def loop(tag: str) -> None:
            i = 0
            while not self.halt.is_set():
                try:
                    chat(self.port, MODEL, f"{tag} {i} lorem ipsum", max_tokens=8, timeout=60)
                    self.ok += 1
                except Exception as exc:  # every kind of failure counts
                    self.failed.append((time.monotonic(), repr(exc)))
                i += 1
        other = threading.Thread(target=loop, args=("b",), daemon=True)
        other.start()
        loop("a")
        other.join(60)

    def stop(self) -> None:
        self.halt.set()
        self.join(90)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    yield from started_run(tmp_path_factory.mktemp("apply"), base(), tiny_model, {"Frontend": 1, "MockerWorker": 2},
                           MODEL)


def test_an_unchanged_reapply_restarts_nothing(run):
    before = {r["pid"] for r in run.status()["replicas"]}
    status, body = post_apply(run, base())
    assert status == 200, body
    assert sorted(body["applied"]["unchanged"]) == ["Frontend", "MockerWorker"] and not body["applied"]["replaced"]
    time.sleep(3)
    assert {r["pid"] for r in run.status()["replicas"]} == before
    assert run.status()["rollout"]["done"]


def test_a_refused_change_says_which_field_and_changes_nothing(run):
    before = {r["pid"] for r in run.status()["replicas"]}
    renamed = base()
    renamed["metadata"]["name"] = "other"
    renamed["spec"]["services"]["MockerWorker"]["replicas"] = 3
    status, body = post_apply(run, renamed)
    assert status == 409 and body["field"] == "metadata.name", body
    etcd = base()
    etcd["spec"]["envs"] = [{"name": "ETCD_ENDPOINTS", "value": "http://127.0.0.1:1"}]
    status, body = post_apply(run, etcd)
    assert status == 409 and "ETCD_ENDPOINTS" in body["error"], body
    status, body = post_apply(run, {"kind": "DynamoGraphDeployment"})
    assert status == 400, body
    assert run.status()["services"] == {"Frontend": 1, "MockerWorker": 2}
    assert {r["pid"] for r in run.status()["replicas"]} == before


def test_a_changed_worker_env_rolls_every_worker_with_no_failed_request(run):
    old_workers, frontend = pids(run, "MockerWorker"), pids(run, "Frontend")
    changed = base()
    changed["spec"]["services"]["MockerWorker"]["envs"] = [{"name": "ROLLOUT_MARK", "value": "2"}]
    path = run.manifest_dir / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    client = Client(run.port)
    client.start()
    try:
        time.sleep(2)
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "dynamo.deploy", "apply", run.control, str(path),
                               "--timeout", "240"], cwd=REPO, capture_output=True, text=True, timeout=300)
        took = time.monotonic() - began
        assert done.returncode == 0, done.stderr + run.log()
        time.sleep(2)
    finally:
        client.stop()
    # Done means the new replicas serve; a retired one leaves the table once its output is drained (seconds).
    wait_until(lambda: len(run.replicas("MockerWorker")) == 2, 60, "the old workers gone from the status")
    workers = run.replicas("MockerWorker")
    assert len(workers) == 2 and all(r["state"] == "ready" for r in workers), workers
    assert not ({r["pid"] for r in workers} & old_workers), "a worker was not replaced"
    assert pids(run, "Frontend") == frontend, "the unchanged frontend was restarted"
    state = json.loads(done.stdout)["services"]["MockerWorker"]
    assert state["state"] == "complete" and state["rollout"]["strategy"] == "RollingUpdate"
    assert (state["rollout"]["max_surge"], state["rollout"]["max_unavailable"]) == (1, 0)  # 25% of 2: up, down
    assert client.failed == [] and client.ok > 0, client.failed[:5]
    print(f"\nrolling update of 2 workers: {took:.1f}s, {client.ok} requests, none failed")


def test_a_service_added_is_started_and_removed_is_retired(run):
    doc = base()
    doc["spec"]["services"]["MockerWorker"]["envs"] = [{"name": "ROLLOUT_MARK", "value": "2"}]
    extra = copy.deepcopy(doc["spec"]["services"]["MockerWorker"])
    extra["replicas"] = 1
    doc["spec"]["services"]["Extra"] = extra
    workers = pids(run, "MockerWorker")
    status, body = post_apply(run, doc)
    assert status == 200 and body["applied"]["added"] == ["Extra"], body
    assert body["applied"]["unchanged"] == ["Frontend", "MockerWorker"], body
    rollout_done(run)
    run.wait_ready({"Extra": 1, "MockerWorker": 2})
    del doc["spec"]["services"]["Extra"]
    status, body = post_apply(run, doc)
    assert status == 200 and body["applied"]["removed"] == ["Extra"], body
    wait_until(lambda: not run.replicas("Extra"), 60, "Extra retired")
    assert "Extra" not in run.status()["services"]
    assert pids(run, "MockerWorker") == workers


def test_a_replica_that_never_gets_ready_stalls_with_the_old_ones_serving(run):
    workers = pids(run, "MockerWorker")
    broken = base()
    broken["spec"]["services"]["MockerWorker"]["envs"] = [{"name": "ROLLOUT_MARK", "value": "2"}]
    broken["spec"]["services"]["MockerWorker"]["extraPodSpec"]["mainContainer"].update(
        command=["python3", "-c"], args=["import time; time.sleep(600)"])
    status, body = post_apply(run, broken, deadline_s=8)
    assert status == 200 and body["applied"]["replaced"] == {"MockerWorker": "RollingUpdate"}, body
    wait_until(lambda: run.status()["rollout"]["services"]["MockerWorker"]["state"] == "stalled", 90, "a stall")
    state = run.status()["rollout"]["services"]["MockerWorker"]
    assert "rollout stalled" in state["rollout"]["message"], state
    wait_until(lambda: len(run.replicas("MockerWorker")) == 2, 60, "the unready new replica retired")
    assert pids(run, "MockerWorker") == workers
    assert chat(run.port, MODEL, "still served", max_tokens=4)["usage"]["completion_tokens"] >= 1


def test_a_changed_frontend_and_workers_roll_together_with_no_failed_request(run):
    """The frontend's replicas share the socket `run` holds for it (`listeners.py`): it surges like the workers
    (a new one serves beside the old one, which is retired once the new one is ready), with no gap
    (tests/deploy/test_run_frontend_surge.py measures it with the `openai` client)."""
    frontend = pids(run, "Frontend")
    doc = base()
    doc["spec"]["services"]["MockerWorker"]["envs"] = [{"name": "ROLLOUT_MARK", "value": "3"}]
    doc["spec"]["services"]["Frontend"]["envs"] = [{"name": "ROLLOUT_MARK", "value": "2"}]
    client = Client(run.port)
    client.start()
    try:
        time.sleep(1)
        began = time.monotonic()
        status, body = post_apply(run, doc)
        assert status == 200 and body["applied"]["replaced"] == {"Frontend": "RollingUpdate",
                                                                 "MockerWorker": "RollingUpdate"}, body
        assert not any("fixed port" in note for note in body["applied"]["notes"]), body
        state = rollout_done(run)["services"]["Frontend"]
        wait_until(lambda: len(run.replicas("Frontend")) == 1 and pids(run, "Frontend") != frontend, 60,
                   "the old frontend retired")
        took = time.monotonic() - began
        time.sleep(1)
    finally:
        client.stop()
    assert state["state"] == "complete" and state["rollout"]["strategy"] == "RollingUpdate", state
    assert {r["generation"] for r in run.replicas("Frontend")} == {state["generation"]}
    assert client.failed == [] and client.ok > 0, client.failed[:5]
    print(f"\nfrontend and workers rolled together: {took:.1f}s, {client.ok} requests, none failed")


def test_a_frontend_changed_to_a_shell_command_is_recreated_on_its_port(run):
    """A frontend run through `sh -c` binds its port itself (LISTEN_PID names the pid `run` starts, which the
    shell's child is not): it cannot surge beside the old one, so it is recreated, and `run` releases the
    service's socket once the old replica is gone, for the new one to bind."""
    frontend = pids(run, "Frontend")
    doc = base()
    doc["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"].update(
        command=["sh", "-c", "python3 -m dynamo.frontend 2>&1 | cat"], args=[])
    status, body = post_apply(run, doc)
    assert status == 200 and body["applied"]["replaced"].get("Frontend") == "Recreate", body
    assert any("fixed port" in note for note in body["applied"]["notes"]), body
    state = rollout_done(run)["services"]["Frontend"]
    assert state["state"] == "complete" and state["rollout"]["strategy"] == "Recreate", state
    assert pids(run, "Frontend").isdisjoint(frontend)
    (rep,) = run.replicas("Frontend")
    assert rep["listen_port"] is None, rep  # its own port, bound by itself
    wait_until(lambda: chat(run.port, MODEL, "recreated", max_tokens=2, timeout=10)["usage"]["completion_tokens"] >= 1,
               60, "the recreated frontend answering on the port")

"""`AdapterReconciler` (dynamo_model.py) against a worker stand-in serving the worker's documented adapter
interface on its system port (`dynamo/worker/lora.py`: `GET /v1/loras` lists `{name: id}`, `POST /v1/loras`
loads, the same source again is a no-op 200, another source a 409; `DELETE /v1/loras/NAME` unloads, 404 for
one not loaded), on the same embedded HTTP server the worker uses. The stand-in can fail a DELETE (500) and
"restart" its replica (a new pid) while answering a load, which a real worker cannot be made to do on cue.
The replicas are the supervisor's entries as the reconciler reads them (name, service, pid, state, system port)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from dynamo.deploy.dynamo_model import AdapterReconciler, DynamoModel, load_models
from dynamo.deploy.supervisor import Supervisor
from dynamo.runtime.asgi import EmbeddedHttpServer, read_body, send_json
from dynamo.runtime.net import free_port
from tests.deploy.manifests import load, mocker_graph

ROUTE = "/v1/loras"


class Worker:
    """One worker's adapters over HTTP, as lora.py serves them; `requests` records (method, path)."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}  # name -> source uri
        self.requests: list[tuple[str, str]] = []
        self.delete_failures = 0  # the next N DELETEs answer 500
        self.load_failures = 0  # the next N POSTs answer 400 (an adapter the worker refuses)
        self.on_load = None  # called as a load is answered (a restart meanwhile)
        self.port = free_port()
        self.http = EmbeddedHttpServer(self.app, "127.0.0.1", self.port)

    async def app(self, scope, receive, send) -> None:
        method, path = scope["method"], scope["path"]
        self.requests.append((method, path))
        if method == "GET" and path == ROUTE:
            await send_json(send, 200, {"status": "success", "loras": {n: i for i, n in enumerate(self.loaded)}})
        elif method == "POST" and path == ROUTE:
            body = json.loads(await read_body(receive, 65536))
            name, uri = body["lora_name"], body["source"]["uri"]
            if self.on_load is not None:
                self.on_load()
            if self.load_failures:
                self.load_failures -= 1
                await send_json(send, 400, {"status": "error", "message": "rank 32 is above --max-lora-rank 16"})
                return
            if self.loaded.get(name, uri) != uri:
                await send_json(send, 409, {"status": "error", "message": f"{name} is loaded from elsewhere"})
                return
            self.loaded[name] = uri
            await send_json(send, 200, {"status": "success", "lora_name": name})
        elif method == "DELETE" and path.startswith(ROUTE + "/"):
            name = path[len(ROUTE) + 1:]
            if self.delete_failures:
                self.delete_failures -= 1
                await send_json(send, 500, {"status": "error", "message": "engine busy"})
            elif self.loaded.pop(name, None) is None:
                await send_json(send, 404, {"status": "error", "message": f"{name} is not loaded"})
            else:
                await send_json(send, 200, {"status": "success", "lora_name": name})
        else:
            await send_json(send, 405, {"status": "error", "message": "not supported"})

    def deletes(self) -> list[str]:
        return [path for method, path in self.requests if method == "DELETE"]


@pytest.fixture
async def worker():
    stand_in = Worker()
    await stand_in.http.start()
    yield stand_in
    await stand_in.http.stop()


def lora(name: str, uri: str) -> dict:
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoModel", "metadata": {"name": "m"},
            "spec": {"modelName": name, "baseModelName": "tiny-llama", "modelType": "lora", "source": {"uri": uri}}}


def setup(tmp_path, worker: Worker, *models: dict) -> tuple[AdapterReconciler, SimpleNamespace]:
    doc = mocker_graph(worker={"modelRef": {"name": "tiny-llama"}})
    graph = load(doc, tmp_path)
    sup = Supervisor({})
    rep = SimpleNamespace(name="MockerWorker-0", service="MockerWorker", pid=100, state="ready", stopping=False,
                          launch=SimpleNamespace(system_port=worker.port))
    sup.replicas[("MockerWorker", 0)] = rep
    return AdapterReconciler(sup, graph, load_models([doc, *models], graph)), rep


def models(tmp_path, *docs: dict) -> list[DynamoModel]:
    doc = mocker_graph(worker={"modelRef": {"name": "tiny-llama"}})
    return load_models([doc, *docs], load(doc, tmp_path))


async def test_a_new_source_is_a_409_then_the_old_one_is_unloaded_and_the_new_one_loaded(tmp_path, worker):
    worker.loaded["a"] = "file:///old"
    reconciler, _ = setup(tmp_path, worker, lora("a", "file:///new"))
    await reconciler.reconcile_once()
    assert worker.requests == [("GET", ROUTE), ("POST", ROUTE), ("DELETE", f"{ROUTE}/a"), ("POST", ROUTE)]
    assert worker.loaded == {"a": "file:///new"} and reconciler.ready == {"a": {"MockerWorker-0"}}


async def test_a_restarted_replica_holding_nothing_gets_no_delete(tmp_path, worker):
    reconciler, rep = setup(tmp_path, worker, lora("a", "file:///a"))
    await reconciler.reconcile_once()
    assert worker.loaded == {"a": "file:///a"}
    rep.pid, worker.loaded = 101, {}  # a new process: it holds none of the old one's adapters
    reconciler.replace(reconciler.graph, models(tmp_path))
    await reconciler.reconcile_once()
    assert worker.deletes() == [] and reconciler.retired == {}


async def test_a_restart_during_a_load_leaves_no_adapter_behind_on_removal(tmp_path, worker):
    """The process answering the load is the restarted one (the replica's port is its own): what it holds is
    not recorded under the old pid, and a removal unloads it wherever a ready replica lists it."""
    reconciler, rep = setup(tmp_path, worker, lora("a", "file:///a"))
    worker.on_load = lambda: setattr(rep, "pid", 101)
    await reconciler.reconcile_once()
    assert ("MockerWorker-0", 100) not in reconciler.sources or not reconciler.sources[("MockerWorker-0", 100)]
    worker.on_load = None
    reconciler.replace(reconciler.graph, models(tmp_path))
    await reconciler.reconcile_once()
    assert worker.deletes() == [f"{ROUTE}/a"] and worker.loaded == {} and reconciler.retired == {}


async def test_a_failing_unload_is_retried_every_round_and_said_once(tmp_path, worker, caplog):
    reconciler, _ = setup(tmp_path, worker, lora("a", "file:///a"))
    await reconciler.reconcile_once()
    reconciler.replace(reconciler.graph, models(tmp_path))
    worker.delete_failures = 3
    with caplog.at_level(logging.INFO, logger="dynamo.deploy.models"):
        for _ in range(3):
            await reconciler.reconcile_once()
            assert "a" in reconciler.retired and worker.loaded == {"a": "file:///a"}
        await reconciler.reconcile_once()
    assert len(worker.deletes()) == 4 and worker.loaded == {} and reconciler.retired == {}
    said = [r.getMessage() for r in caplog.records]
    assert sum("unloading adapter a failed (500): engine busy" in m for m in said) == 1, said
    assert sum("adapter a unloaded" in m for m in said) == 1, said


async def test_an_unready_replica_it_was_loaded_on_is_come_back_to(tmp_path, worker):
    reconciler, rep = setup(tmp_path, worker, lora("a", "file:///a"))
    await reconciler.reconcile_once()
    rep.state = "unready"
    reconciler.replace(reconciler.graph, models(tmp_path))
    await reconciler.reconcile_once()
    assert worker.deletes() == [] and "a" in reconciler.retired  # not reachable now: asked again later
    rep.state = "ready"
    await reconciler.reconcile_once()
    assert worker.loaded == {} and reconciler.retired == {}


async def test_an_adapter_name_is_url_encoded(tmp_path, worker):
    worker.loaded["tiny lora#1"] = "file:///a"
    reconciler, _ = setup(tmp_path, worker, lora("tiny lora#1", "file:///a"))
    await reconciler.reconcile_once()
    reconciler.replace(reconciler.graph, models(tmp_path))
    await reconciler.reconcile_once()
    assert worker.deletes() == [f"{ROUTE}/tiny lora#1"] and worker.loaded == {}  # the server decodes it


async def test_a_failing_load_is_retried_every_round_and_said_once(tmp_path, worker, caplog):
    """(QA saw a refused adapter logged every 2 s per replica, without end.)"""
    reconciler, _ = setup(tmp_path, worker, lora("a", "file:///a"))
    worker.load_failures = 3
    with caplog.at_level(logging.INFO, logger="dynamo.deploy.models"):
        for _ in range(3):
            await reconciler.reconcile_once()
            assert worker.loaded == {}
        await reconciler.reconcile_once()
    assert worker.loaded == {"a": "file:///a"}
    said = [r.getMessage() for r in caplog.records]
    assert sum("loading a on port" in m and "rank 32 is above" in m for m in said) == 1, said

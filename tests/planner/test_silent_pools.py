"""A planner that reads another namespace than its workers publish in says so, instead of holding on "no
engine reports yet" forever (the audit's `"namespace": null` made it read `dynamo` while the graph's workers
were in `$DYN_NAMESPACE`). A real Planner, FpmCollector and virtual connector over an in-memory discovery
store; worker cards are published as workers publish them, and FPMs handed to the collector as its event-plane
consumer hands them."""

from __future__ import annotations

import logging
import uuid
from contextlib import asynccontextmanager

from dynamo.llm.forward_pass import ForwardPassMetrics
from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import make_connector
from dynamo.planner.observe import FpmCollector
from dynamo.planner.planner import Planner
from dynamo.runtime.discovery.mem import MemStore
from tests.planner.test_aic_interpolation import publish_workers


@asynccontextmanager
async def running_planner(cfg: PlannerConfig, store):
    """A started planner over `store` (a started store, closed on exit) that warns of silence at once."""
    conn, collector = make_connector(cfg, store=store), FpmCollector(store, cfg)
    planner = Planner(cfg, conn, collector)
    planner.silent.after = planner.silent.every = 0.0  # a minute, and ten, in a running planner
    try:
        await conn.start()
        yield planner
    finally:
        await collector.close()
        await conn.close()
        await store.close()


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "nothing seen" in r.getMessage()]


async def test_pools_publishing_elsewhere_are_named_then_their_recovery(caplog):
    caplog.set_level(logging.INFO, "dynamo.planner")
    cfg = PlannerConfig(environment="virtual", model_name="Qwen/Qwen3-0.6B", optimization_target="latency")
    assert cfg.namespace == "dynamo"  # what a config's null namespace used to become, whatever $DYN_NAMESPACE said
    store = MemStore(name=f"silent-{uuid.uuid4().hex}")
    await store.start()
    async with running_planner(cfg, store) as planner:
        await publish_workers(store, "team-a-graph")
        await planner.load_tick()
        [said] = warnings(caplog)
        assert said.startswith("planner: nothing seen in namespace 'dynamo' of the mem discovery store for ")
        assert "no worker card there while the prefill (1 ready), decode (1 ready) pool(s) have ready replicas" in said
        assert "worker cards are in namespace(s) 'team-a-graph': set the planner's `namespace`" in said
        assert all(d.target == d.current and "no engine reports yet" in d.reason for d in planner.decisions)

        await publish_workers(store, "dynamo")  # cards here now, their FPMs not yet
        await planner.load_tick()
        assert "2 worker card(s) there but no forward-pass metrics from the prefill (1 ready), decode (1 ready)" \
            in warnings(caplog)[-1]

        for instance_id in (1, 2):  # each engine's first FPM, as the event-plane consumer hands it over
            planner.collector.observe(instance_id, ForwardPassMetrics(worker_id=str(instance_id), wall_time=0.01))
        caplog.clear()
        await planner.load_tick()
        assert warnings(caplog) == []
        assert "planner: the pools publish in namespace 'dynamo' now" in caplog.text


async def test_no_card_in_the_store_at_all_names_the_store_read_and_runs_own(caplog, tmp_path):
    """QA item 5: a planner started by hand beside `dynamo.deploy run` read another store than `run`'s private
    file store; the warning said the cards were "not there" without saying where it had looked."""
    from dynamo.runtime.discovery.file import FileStore
    caplog.set_level(logging.INFO, "dynamo.planner")
    cfg = PlannerConfig(environment="virtual", model_name="m", namespace="default-mocker-disagg",
                        optimization_target="latency")
    store = FileStore(root=str(tmp_path / "kv"))
    await store.start()
    async with running_planner(cfg, store) as planner:
        await planner.load_tick()
        [said] = warnings(caplog)
        assert said.startswith(f"planner: nothing seen in namespace 'default-mocker-disagg' of the file discovery "
                               f"store {tmp_path / 'kv'} ($DYN_FILE_KV) for ")
        assert "no worker card in any namespace of this store" in said
        assert "export DYN_DISCOVERY_BACKEND=file and DYN_FILE_KV=<run's state dir>/kv" in said


async def test_a_pool_at_zero_replicas_is_not_silent(caplog):
    caplog.set_level(logging.INFO, "dynamo.planner")
    cfg = PlannerConfig(environment="virtual", model_name="m", optimization_target="latency", min_endpoint=0)
    store = MemStore(name=f"silent-{uuid.uuid4().hex}")
    await store.start()
    async with running_planner(cfg, store) as planner:
        await planner.connector.scale({"prefill": 0, "decode": 0})
        await planner.load_tick()
        assert warnings(caplog) == []


async def test_workers_in_the_suffixed_namespace_are_the_planners():
    """DYN_NAMESPACE_WORKER_SUFFIX: workers register in "{namespace}-{suffix}"; a namespace that only starts
    alike is another graph's."""
    cfg = PlannerConfig(environment="virtual", model_name="Qwen/Qwen3-0.6B", optimization_target="latency")
    store = MemStore(name=f"suffixed-{uuid.uuid4().hex}")
    await store.start()
    collector = FpmCollector(store, cfg)
    try:
        await publish_workers(store, "dynamo2")
        await collector.refresh()
        assert collector.cards == {} and await collector.namespaces_elsewhere() == ["dynamo2"]
        await publish_workers(store, "dynamo-ab12")
        await collector.refresh()
        assert sorted(e.role for e in collector.cards.values()) == ["decode", "prefill"]
        assert {ns for ns, _ in collector._subs} == {"dynamo-ab12"}, "FPMs followed where the workers publish"
        assert await collector.namespaces_elsewhere() == ["dynamo2"]
    finally:
        await collector.close()
        await store.close()


def test_prometheus_selectors_take_the_suffixed_namespace_as_dynamo_labels_it():
    import re

    from dynamo.planner.prometheus import namespace_match

    matcher = namespace_match("team-a", unlabelled=True)
    pattern = re.fullmatch(r'dynamo_namespace=~"(.*)"', matcher).group(1).replace("\\\\", "\\")
    for label in ("team_a", "team-a", "team_a_ab12", "team-a-ab12", ""):
        assert re.fullmatch(pattern, label), (label, matcher)
    for label in ("team_a2", "team-ab", "other"):
        assert not re.fullmatch(pattern, label), (label, matcher)

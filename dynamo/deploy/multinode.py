"""Multi-node services (`multinode.nodeCount` > 1) for `render`: one LeaderWorkerSet
(`leaderworkerset.x-k8s.io/v1`, the operator's non-Grove path) per service, each replica a
group of `nodeCount` pods: a leader (index 0, the one that registers and is probed) and
`nodeCount - 1` workers that lend it their GPUs.

How the engine spans the pods is engine-specific (facts from the operator's backends):
- vLLM: Ray. The leader starts a Ray head and then the worker with
  `--distributed-executor-backend ray`; the other pods join the head and block.
- SGLang: torch.distributed. Every pod runs the worker with `--dist-init-addr
  <leader>:29500 --nnodes N --node-rank <index>`.
Other engines are rendered with the command as written on every pod and a warning.
LWS injects `LWS_LEADER_ADDRESS` and `LWS_WORKER_INDEX` into every container.
"""

from __future__ import annotations

import copy
import shlex
from typing import Any

from dynamo.deploy import contract, scrape
from dynamo.deploy.commands import flag_value, parse_command, set_flag
from dynamo.deploy.model import Service

LWS_API = "leaderworkerset.x-k8s.io/v1"
LEADER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
RAY_PORT = 6379
SGLANG_DIST_PORT = 29500
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def node_count(svc: Service) -> int:
    return svc.multinode.nodeCount if svc.multinode else 1


def _argv(container: dict[str, Any]) -> list[str]:
    return [*(container.get("command") or []), *(container.get("args") or [])]


def _set_argv(container: dict[str, Any], argv: list[str]) -> None:
    container["command"] = argv
    container.pop("args", None)


def _edit_engine(container: dict[str, Any], module: str, edit) -> None:
    """Apply `edit(args) -> args` to the engine invocation in the container's command line."""
    argv = _argv(container)
    line = parse_command(argv[:1], argv[1:])
    for inv in line.invocations:
        if inv.module == module:
            inv.args = edit(inv.args)
    _set_argv(container, line.render())


def _vllm(leader: dict[str, Any], worker: dict[str, Any]) -> None:
    _edit_engine(leader, "dynamo.vllm", lambda a: a if flag_value(a, ("--distributed-executor-backend",))
                 else [*a, "--distributed-executor-backend", "ray"])
    script = f"ray start --head --port={RAY_PORT} && exec {shlex.join(_argv(leader))}"
    _set_argv(leader, ["/bin/sh", "-c", script])
    _set_argv(worker, ["/bin/sh", "-c", f"exec ray start --address=$(LWS_LEADER_ADDRESS):{RAY_PORT} --block"])


def _sglang(leader: dict[str, Any], worker: dict[str, Any], nodes: int) -> None:
    def dist(args: list[str]) -> list[str]:
        args = set_flag(args, ("--dist-init-addr",), f"$(LWS_LEADER_ADDRESS):{SGLANG_DIST_PORT}")
        args = set_flag(args, ("--nnodes",), str(nodes))
        return set_flag(args, ("--node-rank",), "$(LWS_WORKER_INDEX)")
    for container in (leader, worker):
        _edit_engine(container, "dynamo.sglang", dist)


def _not_serving_metrics(template: dict[str, Any]) -> None:
    """A non-leader pod: no system port (only the leader runs the Dynamo worker that serves it), so no
    probes on it, no port advertised, and nothing asking a Prometheus to scrape it (the PodMonitor's
    label, the `prometheus.io/*` annotations): a scrape there is a target that is always down."""
    container = template["spec"]["containers"][0]
    for probe in _PROBES:
        container.pop(probe, None)
    ports = [p for p in container.get("ports") or [] if not (isinstance(p, dict) and p.get("name") == "system")]
    if ports:
        container["ports"] = ports
    else:
        container.pop("ports", None)
    meta = template.setdefault("metadata", {})
    (meta.get("labels") or {}).pop(scrape.METRICS_LABEL, None)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("prometheus.io/")}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)


def lws_object(meta: dict[str, Any], svc: Service, pod_template: dict[str, Any],
               warnings: list[str], name: str) -> dict[str, Any]:
    """The LeaderWorkerSet for one multi-node service, from its single-pod template."""
    nodes = node_count(svc)
    leader_tpl, worker_tpl = copy.deepcopy(pod_template), copy.deepcopy(pod_template)
    leader, worker = leader_tpl["spec"]["containers"][0], worker_tpl["spec"]["containers"][0]
    modules = parse_command(*contract.command_of(svc)[:2]).modules
    if "dynamo.vllm" in modules:
        _vllm(leader, worker)
    elif "dynamo.sglang" in modules:
        _sglang(leader, worker, nodes)
    else:
        engine = ", ".join(modules) or "this command"
        warnings.append(f"{name}: no multi-node wiring known for {engine}; every pod runs the command as written")
    _not_serving_metrics(worker_tpl)
    return {
        "apiVersion": LWS_API, "kind": "LeaderWorkerSet", "metadata": meta,
        "spec": {"replicas": svc.replica_count, "startupPolicy": "LeaderCreated",
                 "leaderWorkerTemplate": {"size": nodes, "restartPolicy": "RecreateGroupOnPodRestart",
                                          "leaderTemplate": leader_tpl, "workerTemplate": worker_tpl}},
    }

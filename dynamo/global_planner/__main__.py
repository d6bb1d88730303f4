"""`python -m dynamo.global_planner`: serves `<DYN_NAMESPACE>.GlobalPlanner.scale_request` (planners in
`environment: global-planner` send their decisions there; see `handler.py`) and
`<DYN_NAMESPACE>.GlobalPlanner.health`, with Dynamo's flags: `--managed-namespaces NS ...` (the planners
heard; default all), `--environment kubernetes` (the only one), `--no-operation` (log, apply nothing),
`--max-total-gpus N` (one GPU budget across the managed graphs; -1: none). What it cannot start with (a
negative budget other than -1, no Kubernetes config and no `dynamo.deploy run` graphs) is a one-line error,
exit 2, before anything is served."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass

import msgspec

from dynamo.global_planner.graphs import Graphs
from dynamo.global_planner.handler import ScaleHandler
from dynamo.global_planner.local_graphs import LocalGraphs, parse_urls
from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors import scale_protocol as sp
from dynamo.planner.connectors.kubernetes import make_api_client
from dynamo.runtime import records
from dynamo.runtime.config import build_parser, from_namespace, setting
from dynamo.runtime.config_dump import DumpConfigTo, write_config_dump
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.process import run_main

log = logging.getLogger("dynamo.global_planner")


@dataclass
class GlobalPlannerArgs(DumpConfigTo):
    """GlobalPlanner: applies the scaling decisions of many graphs' planners within one GPU budget."""

    namespace: str = setting("", "Dynamo namespace its endpoints are served in (required)", env="DYN_NAMESPACE")
    managed_namespaces: list = setting([], "Planner namespaces heard (`{k8s namespace}-{DGD}`); default: all",
                                       env=False)
    environment: str = setting("kubernetes", "Where decisions are applied", env=False, choices=("kubernetes",))
    no_operation: bool = setting(False, "Log scale requests and answer success without applying them", env=False)
    max_total_gpus: int = setting(-1, "GPU cap across the managed graphs' workers (-1: none)", env=False)
    ready_timeout: float = setting(600.0, "Seconds a blocking request waits for its pools to be ready", env=False)
    kube_namespace: str = setting("default", "Kubernetes namespace of the managed DGDs", env="POD_NAMESPACE")
    kubeconfig: str | None = setting(None, "Kubeconfig file when not in a cluster", env="KUBECONFIG")
    # `dynamo.deploy run` injects its graphs' control endpoints: decisions are applied there, not on a cluster.
    control_urls: str | None = setting(None, "Graphs of a `dynamo.deploy run`: JSON {graph: control URL}",
                                       env="DYN_DEPLOY_CONTROL_URLS", flag=False)


def build_parser_for_deploy():
    """The flag parser (`dynamo.deploy validate` checks manifests' GlobalPlanner flags with it)."""
    return build_parser(GlobalPlannerArgs, prog="python -m dynamo.global_planner")


def kube_client(args: GlobalPlannerArgs):
    """The Kubernetes API client the graphs are read and scaled through; ValueError, in one line, when there
    is no cluster config (in-cluster, or `--kubeconfig` / $KUBECONFIG / ~/.kube/config)."""
    try:
        return make_api_client(PlannerConfig(environment="kubernetes", kubeconfig=args.kubeconfig))
    except ImportError as exc:
        raise ValueError(f"the Kubernetes client is not installed ({exc}): pip install 'dynamo-serve[planner]'") \
            from None
    except Exception as exc:  # the library's ConfigException, or a kubeconfig it cannot read
        raise ValueError(f"no Kubernetes cluster config ({exc}): run it in a cluster, give --kubeconfig "
                         "(or $KUBECONFIG), or run it in a graph under `python -m dynamo.deploy run`, which "
                         "gives it the graphs' control endpoints (DYN_DEPLOY_CONTROL_URLS)") from None


async def serve(args: GlobalPlannerArgs, stop: asyncio.Event, api=None) -> int:
    runtime = await DistributedRuntime.create(None, args.namespace)
    if args.control_urls:
        graphs: Graphs | LocalGraphs = LocalGraphs(parse_urls(args.control_urls))
        log.info("GlobalPlanner: under `dynamo.deploy run`; graphs %s scaled through their control endpoints",
                 ", ".join(sorted(graphs.urls)))
    else:
        graphs = Graphs(api)
    handler = ScaleHandler(graphs, args.managed_namespaces, args.kube_namespace, args.no_operation, args.max_total_gpus,
                           args.ready_timeout)

    async def scale_request(request: sp.ScaleRequest, ctx):
        yield msgspec.to_builtins(await handler.handle(request))

    async def health(payload: bytes, ctx):
        yield {"status": "healthy", "component": sp.COMPONENT, "namespace": args.namespace,
               "managed_namespaces": sorted(args.managed_namespaces) or "all"}

    try:
        await runtime.start_system_server()
        for name, fn, kind in ((sp.SCALE_ENDPOINT, scale_request, sp.ScaleRequest), (sp.HEALTH_ENDPOINT, health, None)):
            await runtime.serve_endpoint(records.EndpointId(args.namespace, sp.COMPONENT, name), fn, request_type=kind)
        log.info("GlobalPlanner: %s, managed namespaces %s, GPU budget %s%s", args.namespace,
                 sorted(args.managed_namespaces) or "all", args.max_total_gpus if args.max_total_gpus >= 0 else "none",
                 " (no-operation: requests are logged, not applied)" if args.no_operation else "")
        await stop.wait()
    finally:
        await runtime.shutdown(grace=5.0)
        if api is not None:
            api.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser_for_deploy()
    args = from_namespace(GlobalPlannerArgs, parser.parse_args(argv))
    if args.control_urls:
        try:
            parse_urls(args.control_urls)
        except ValueError as exc:
            parser.error(str(exc))
    if not args.namespace:
        parser.error("DYN_NAMESPACE (or --namespace) is required: the GlobalPlanner's endpoints are served there")
    if args.max_total_gpus < -1:
        parser.error(f"--max-total-gpus must be >= 0, or -1 for no budget: {args.max_total_gpus}")
    write_config_dump(args, "dynamo.global_planner")
    api = None
    if not args.control_urls:  # at start, so a missing cluster config is one line, not a served-then-crashed task
        try:
            api = kube_client(args)
        except ValueError as exc:
            parser.error(str(exc))
    return run_main(lambda stop: serve(args, stop, api))


if __name__ == "__main__":
    sys.exit(main())

"""`python -m dynamo.deploy validate FILE...`: schema, image and command-line checks of
DGD manifests. Every finding names its path; command-line findings name the service.
Command lines are checked as the container runs them: the operator's default command before
`args` where it gives one, and Kubernetes' `$(VAR)` references expanded wherever the manifest
fixes the value (see `expansion`)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from dynamo.deploy import (autoscalers, config_maps, contract, dynamo_model, expansion, model, names, rollout,
                           scale_to_zero, strict_yaml, templates, v1beta1)
from dynamo.deploy.commands import CommandLine, flag_value, parse_command, probe_files
from dynamo.deploy.contract import command_of, exec_probes
from dynamo.deploy.parsers import check_args
from dynamo.deploy.schema_walk import join_path


@dataclass
class Report:
    source: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    graphs: list[model.Graph] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # informational: never fail `--strict`

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        return ([f"{self.source}: error: {e}" for e in self.errors]
                + [f"{self.source}: warning: {w}" for w in self.warnings]
                + [f"{self.source}: note: {n}" for n in self.notes])


def load_documents(path: str | Path) -> list[Any]:
    with open(path, encoding="utf-8") as fh:
        return strict_yaml.load_all(fh)


# Services NVIDIA Dynamo's manifests give no component type (a pool's local router, the global router):
# run and deployed like a worker, which is what they are to the graph, so the missing type is not news.
UNTYPED_SERVICES = ("dynamo.router", "dynamo.global_router")

Paths = dict[str, tuple[str, str]]  # service -> (its path, its main container's path)


# The operator builds an EPP's container and wires it into an inference gateway; without
# them a GAIE graph has no frontend at all, so ignoring the component would serve nothing.
EPP_UNSUPPORTED = ("is an EPP (the Gateway API Inference Extension's endpoint picker, whose container and gateway "
                   "wiring the Dynamo operator supplies): EPP / GAIE graphs are not supported by `run`/`render`; "
                   "deploy this manifest with the Dynamo operator")


def known_env(svc: model.Service, graph: model.Graph | None = None) -> dict[str, str]:
    """The container env values fixed by the manifest, for `$(VAR)` expansion: the operator's ports, then
    the env list (`valueFrom` entries, Secrets and the pod's downward-API values are known only in the pod)."""
    port = str(contract.pod_port(svc, graph))
    injected = ({"DYNAMO_PORT": port, "DYN_HTTP_PORT": port} if contract.is_frontend(svc)
                else {"DYN_SYSTEM_PORT": port} if contract.has_system_port(svc) else {})
    return {**injected, **expansion.expand_env(contract.env_entries(svc, graph), injected)}


def undefined_references(svc: model.Service, line: CommandLine, graph: model.Graph | None) -> list[str]:
    """`$(NAME)` words of an exec-form command line that nothing in the container's env defines: Kubernetes
    passes them as written. (A shell script's `$(...)` is the shell's command substitution; an envFrom
    source may define any name.)"""
    if line.shell or svc.envFromSecret or svc.container.envFrom:
        return []
    defined = {e.name for e in contract.env_entries(svc, graph)} | {"POD_NAME", "POD_NAMESPACE", "POD_IP", "POD_UID"}
    defined |= {"DYN_NAMESPACE", "DYN_COMPONENT", "DYN_PARENT_DGD_K8S_NAME", "DYN_PARENT_DGD_K8S_NAMESPACE",
                "DYN_DISCOVERY_BACKEND", "DYN_HEALTH_CHECK_ENABLED", "ETCD_ENDPOINTS"}
    defined |= set(known_env(svc, graph))
    command, args, _ = command_of(svc)  # as written: a `$$(NAME)` escape is no reference
    refs = dict.fromkeys(r for word in [*(command or []), *(args or [])] for r in expansion.unresolved(word))
    return [r for r in refs if r[2:-1] not in defined]


def check_services(services: dict[str, model.Service], report: Report, paths: Paths,
                   graph: model.Graph | None = None) -> None:
    for name, svc in services.items():
        where, main_path = paths[name]
        if svc.componentType == "epp":
            report.errors.append(f"{where}: component {name} {EPP_UNSUPPORTED}")
            continue
        container = svc.container
        if not container.image:
            report.errors.append(f"{main_path}.image: required (service {name} has no image)")
        line = parse_command(*contract.expanded_command(svc, known_env(svc, graph)))
        if contract.untyped_frontend(svc):
            report.warnings.append(f"{where}: {contract.UNTYPED_FRONTEND}")
        elif svc.componentType is None and not any(inv.module in UNTYPED_SERVICES for inv in line.invocations):
            report.warnings.append(f"{where}: no component type; treated as a worker")
        if svc.extraPodSpec is not None and svc.extraPodSpec.containers:
            names = ", ".join(str(c.get("name", "?")) if isinstance(c, dict) else "?" for c in svc.extraPodSpec.containers)
            report.warnings.append(f"{where}.extraPodSpec.containers: sidecar container(s) {names} run under Kubernetes "
                                   "(`render` keeps them); `run` starts the main container's command alone")
        if svc.multinode and svc.multinode.nodeCount > 1:
            report.warnings.append(f"{where}.multinode: {svc.multinode.nodeCount} nodes per replica; `render` emits a "
                                   "LeaderWorkerSet, `run` cannot start it on one machine")
        if not line.argv:
            report.errors.append(f"{main_path}.command: no command (the image has no entrypoint; only frontend and "
                                 f"planner components get a default, service {name} is a "
                                 f"{svc.componentType or 'worker'}: give command/args)")
            continue
        if not line.invocations:
            report.warnings.append(f"{where}: command runs no `python -m dynamo.*` module; not checked")
        for ref in undefined_references(svc, line, graph):
            report.warnings.append(f"{main_path}.args: service {name}: {ref} is not defined in the container's env; "
                                   "Kubernetes passes it as written")
        for inv in line.invocations:
            result = check_args(inv.module, inv.args)
            report.errors += [f"{main_path}.args: service {name}: {e}" for e in result.errors]
            report.warnings += [f"{where}: service {name}: {w}" for w in result.warnings]
        written = " ".join(line.tokens)
        for kind, probe in exec_probes(svc).items():
            for path in probe_files(probe):
                if path not in written:
                    report.warnings.append(f"{where}: {kind} probe reads {path}, which the command never writes "
                                           f"(the probe cannot pass; e.g. end the command with `2>&1 | tee {path}`)")


def validate_document(doc: Any, report: Report, index: int) -> None:
    prefix = f"document {index}: " if index else ""
    beta = v1beta1.is_v1beta1(doc)
    problems = v1beta1.check(doc) if beta else model.check(doc)
    patch = bool(problems) and templates.looks_like_patch(doc)
    if patch:
        report.errors.append(f"{prefix}{templates.PATCH_HINT}")
    report.errors += [f"{prefix}{path}: {message}" for path, message in problems] + \
        [f"{prefix}{problem}" for problem in name_problems(doc)]
    ignored = v1beta1.dropped_fields(doc) if beta else model.ignored_fields(doc) + autoscalers.deprecated_fields(doc)
    report.warnings += [f"{prefix}{w}" for w in ignored + templates.findings(doc)]
    if problems:
        # No graph for `run`/`render`, but the command lines that can still be read are checked:
        # a user fixing a recipe sees every error in one run, not one per run. Not in a patch,
        # whose components lack image and command by design.
        if not patch:
            services, paths = readable_services(doc, {path for path, _ in problems}, beta)
            check_services(services, report, paths)
        return
    if beta:
        graph, paths = v1beta1.convert(doc), v1beta1.paths(doc)
    else:
        graph = model.load(doc)
        paths = {n: (f"spec.services.{n}", f"spec.services.{n}.extraPodSpec.mainContainer")
                 for n in graph.spec.services}
    report.graphs.append(graph)
    check_services(graph.spec.services, report, paths, graph)
    check_rollout(graph, report, paths, beta, prefix)


def check_rollout(graph: model.Graph, report: Report, paths: Paths, beta: bool, prefix: str = "") -> None:
    """The rollout annotations of each service and the graph's `spec.restart` (see `rollout`)."""
    for name, svc in graph.spec.services.items():
        errors, warnings = rollout.check_service(name, paths[name][0], svc, graph, beta)
        report.errors += [f"{prefix}{e}" for e in errors]
        report.warnings += [f"{prefix}{w}" for w in warnings]
    report.errors += [f"{prefix}{e}" for e in rollout.check_graph(graph, beta) + rollout.check_restart(graph, beta)]
    report.warnings += [f"{prefix}{w}" for w in rollout.restart_warnings(graph)]
    if graph.spec.restart is not None:
        report.notes.append(f"{prefix}spec.restart: a new id restarts the services as its strategy says, under "
                            "`run`'s apply as under the operator; `render` stamps the id on every pod template "
                            f"({rollout.RESTART_ANNOTATION})")


def readable_services(doc: Any, bad: set[str], beta: bool) -> tuple[dict[str, model.Service], Paths]:
    """The services of a document with schema problems whose command lines can still be read:
    each without its own faulty fields, unless a fault is in (or above) what decides the command."""
    services: dict[str, model.Service] = {}
    paths: Paths = {}
    for name, raw, where, main_path in _raw_services(doc, beta):
        own = {p for p in bad if _within(p, where)}
        watched = (f"{main_path}.command", f"{main_path}.args", f"{where}.componentType", f"{where}.type")
        if name in services or any(_within(w, p) or _within(p, w) for p in own for w in watched):
            continue
        pruned = _without(raw, where, own)
        try:
            services[name] = v1beta1.component_service(pruned) if beta else msgspec.convert(pruned, model.Service)
        except (msgspec.ValidationError, StopIteration):  # e.g. a required field is missing: nothing to read
            continue
        paths[name] = (where, main_path)
    return services, paths


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith((f"{top}.", f"{top}["))


def _without(value: Any, path: str, bad: set[str]) -> Any:
    """A copy of `value` without the parts whose path (as `model.check` spells it) has a problem."""
    if isinstance(value, dict):
        return {k: _without(v, join_path(path, k), bad) for k, v in value.items() if join_path(path, k) not in bad}
    if isinstance(value, list):
        return [_without(v, join_path(path, i), bad) for i, v in enumerate(value) if join_path(path, i) not in bad]
    return value


def _raw_services(doc: Any, beta: bool) -> list[tuple[str, Any, str, str]]:
    """(name, raw service, its path, its main container's path) for either served version."""
    spec = doc.get("spec") if isinstance(doc, dict) else None
    spec = spec if isinstance(spec, dict) else {}
    if not beta:
        services = spec.get("services")
        return [(n, s, f"spec.services.{n}", f"spec.services.{n}.extraPodSpec.mainContainer")
                for n, s in (services.items() if isinstance(services, dict) else ()) if isinstance(n, str)]
    comps = spec.get("components")
    return [(c.get("name"), c, f"spec.components[{i}]",
             f"spec.components[{i}].podTemplate.spec.containers[{v1beta1.main_index(c)}]")
            for i, c in enumerate(comps if isinstance(comps, list) else [])
            if isinstance(c, dict) and isinstance(c.get("name"), str)]


def validate_file(path: str | Path) -> Report:
    report = Report(str(path))
    try:
        docs = load_documents(path)
    except (OSError, yaml.YAMLError) as exc:
        report.errors.append(f"cannot read: {exc}")
        return report
    graphs = [(i, d) for i, d in enumerate(docs)
              if not isinstance(d, dict) or d.get("kind", model.KIND) == model.KIND]
    if not graphs:
        report.errors.append(f"no {model.KIND} document found{_kinds_found(docs)}")
    for index, doc in graphs:
        validate_document(doc, report, index if len(docs) > 1 else 0)
    check_mounted_plans(docs, report)
    check_autoscalers(docs, report)
    report.errors += dynamo_model.model_errors(docs, report.graphs)
    report.errors += name_collisions(report.graphs)
    return report


def _kinds_found(docs: list[Any]) -> str:
    """The kinds the file has instead, a misspelling of the graph's kind named as one."""
    kinds = list(dict.fromkeys(d["kind"] for d in docs if isinstance(d, dict) and isinstance(d.get("kind"), str)))
    if not kinds:
        return ""
    close = difflib.get_close_matches(model.KIND, kinds, n=1, cutoff=0.8)
    hint = f"; is kind {close[0]!r} a misspelling of {model.KIND}?" if close else ""
    return f" (the file has kind {', '.join(map(repr, kinds))}{hint})"


def name_problems(doc: Any) -> list[str]:
    """The DGD's own name as the API server checks it (a DNS-1123 subdomain); a missing one is a schema error."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    problem = names.subdomain_problem(name) if isinstance(name, str) else None
    return [f"metadata.name: {name!r} {problem}; Kubernetes refuses the {model.KIND}"] if problem else []


def name_collisions(graphs: list[model.Graph]) -> list[str]:
    """Services whose Kubernetes objects (`{dgd}-{service}` Deployment, Service and pods, and the component label
    that selects the pods) would have one name: one would replace, or select the pods of, the other."""
    objects, labels = [], []
    for graph in graphs:
        where = f"{graph.metadata.namespace or ''}/"
        for service in graph.spec.services:
            owner = f"graph {graph.metadata.name}, service {service}"
            objects.append((owner, where + names.k8s_name(graph.metadata.name, service)))
            labels.append((owner, f"{where}{graph.metadata.name}/{names.k8s_name(service)}"))
    found: dict[tuple[str, ...], str] = {}
    for name, owners in names.collisions(objects + labels):
        found.setdefault(tuple(owners), name.split("/")[-1])  # the object's name, where both collide
    return [f"{' and '.join(owners)} would have one Kubernetes name, {name!r} (names are lowercased, other "
            "characters become '-', long ones are cut and hashed): rename one of them" for owners, name in found.items()]


def check_autoscalers(docs: list[Any], report: Report) -> None:
    """The HPAs and KEDA ScaledObjects beside the graphs: each scales a service of the file, one each."""
    maps = config_maps.collect(docs)
    errors, warnings = autoscalers.check(docs, report.graphs, maps)
    report.errors += errors
    report.warnings += warnings + scale_to_zero.warnings(docs, report.graphs, maps)


def check_mounted_plans(docs: list[Any], report: Report) -> None:
    """A global router's plan, or a planner's config (how Dynamo's profiler delivers it), read from a ConfigMap
    of the same file is checked as its program will read it (a broken one would otherwise be a crash-looping
    pod)."""
    maps = config_maps.collect(docs)
    for graph in report.graphs:
        for name, svc in graph.spec.services.items():
            for inv in parse_command(*command_of(svc)[:2]).invocations:
                read = _MOUNTED_CONFIGS.get(inv.module)
                path = flag_value(inv.args, ("--config",)) if read else None
                found = config_maps.served(svc, maps, path) if path else None
                if found is None:  # not under a mount of the file's ConfigMaps: read where it runs
                    continue
                where = f"graph {graph.metadata.name}, service {name}: {read[0]} {path}"
                if found.content is None:
                    report.errors.append(f"{where}: ConfigMap {found.configmap} (mounted at {found.mount_path}) has "
                                         f"no key {found.key!r}, so the pod finds no file there and the program "
                                         "stops at start")
                    continue
                errors, warnings = read[1](found.content, path)
                report.errors += [f"{where}: {e}" for e in errors]
                report.warnings += [f"{where}: {w}" for w in warnings]


def _router_plan(found: bytes, path: str) -> tuple[list[str], list[str]]:
    from dynamo.global_router.pools import PoolConfigError, parse_plan

    try:
        plan = parse_plan(json.loads(found))
    except (ValueError, PoolConfigError) as exc:  # JSONDecodeError is a ValueError
        return [str(exc)], []
    return [], list(plan.warnings)


def _planner_config(found: bytes, path: str) -> tuple[list[str], list[str]]:
    """What the planner would refuse at start, read as its loader reads a file (JSON, or YAML by extension)."""
    from dynamo.planner.config import convert
    from dynamo.planner.connectors.base import connector_problem

    try:
        raw = yaml.safe_load(found) if path.endswith((".yaml", ".yml")) else json.loads(found)
        problem = connector_problem(convert(raw).environment)
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError is a ValueError
        problem = str(exc)
    return ([f"the planner refuses this config at start: {problem}"] if problem else []), []


_MOUNTED_CONFIGS = {"dynamo.global_router": ("global router plan", _router_plan),
                    "dynamo.planner": ("planner config", _planner_config)}


def validate_any(path: str) -> Report:
    """A DGD file, or a DGDR file (its admission checks: `dynamo.profiler`)."""
    from dynamo.profiler.pipeline import check_request, is_request

    if not is_request(path):
        return validate_file(path)
    errors, warnings = check_request(path)
    return Report(path, errors, warnings)


def main(files: list[str], strict: bool = False, quiet: bool = False) -> int:
    failed = False
    for path in files:
        report = validate_any(path)
        for line in report.lines():
            print(line)
        bad = bool(report.errors) or (strict and bool(report.warnings))
        failed |= bad
        if not quiet:
            print(f"{path}: {'INVALID' if bad else 'ok'}")
    return 1 if failed else 0

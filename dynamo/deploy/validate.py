"""`python -m dynamo.deploy validate FILE...`: schema, image and command-line checks of
DGD manifests. Every finding names its path; command-line findings name the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dynamo.deploy import model, v1beta1
from dynamo.deploy.commands import parse_command, probe_files
from dynamo.deploy.contract import command_of, exec_probes
from dynamo.deploy.parsers import check_args


@dataclass
class Report:
    source: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    graphs: list[model.Graph] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        return ([f"{self.source}: error: {e}" for e in self.errors]
                + [f"{self.source}: warning: {w}" for w in self.warnings])


def load_documents(path: str | Path) -> list[Any]:
    with open(path, encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


Paths = dict[str, tuple[str, str]]  # service -> (its path, its main container's path)


def check_services(graph: model.Graph, report: Report, paths: Paths) -> None:
    for name, svc in graph.spec.services.items():
        where, main_path = paths[name]
        container = svc.container
        if not container.image:
            report.errors.append(f"{main_path}.image: required (service {name} has no image)")
        if svc.componentType is None:
            report.warnings.append(f"{where}: no component type; treated as a worker")
        if svc.multinode and svc.multinode.nodeCount > 1:
            report.warnings.append(f"{where}.multinode: {svc.multinode.nodeCount} nodes per replica; `render` emits a "
                                   "LeaderWorkerSet, `run` cannot start it on one machine")
        command, args, _ = command_of(svc)
        line = parse_command(command, args)
        if not line.argv:
            report.errors.append(f"{main_path}.command: no command (the image has no entrypoint; only frontend and "
                                 f"planner components get a default, service {name} is a "
                                 f"{svc.componentType or 'worker'}: give command/args)")
            continue
        if not line.invocations:
            report.warnings.append(f"{where}: command runs no `python -m dynamo.*` module; not checked")
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
    report.errors += [f"{prefix}{path}: {message}" for path, message in problems]
    if problems:
        return
    if beta:
        graph, paths = v1beta1.convert(doc), v1beta1.paths(doc)
        report.warnings += [f"{prefix}{w}" for w in v1beta1.dropped_fields(doc)]
    else:
        graph = model.load(doc)
        paths = {n: (f"spec.services.{n}", f"spec.services.{n}.extraPodSpec.mainContainer")
                 for n in graph.spec.services}
    report.graphs.append(graph)
    check_services(graph, report, paths)


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
        report.errors.append(f"no {model.KIND} document found")
    for index, doc in graphs:
        validate_document(doc, report, index if len(docs) > 1 else 0)
    return report


def main(files: list[str], strict: bool = False, quiet: bool = False) -> int:
    failed = False
    for path in files:
        report = validate_file(path)
        for line in report.lines():
            print(line)
        bad = bool(report.errors) or (strict and bool(report.warnings))
        failed |= bad
        if not quiet:
            print(f"{path}: {'INVALID' if bad else 'ok'}")
    return 1 if failed else 0

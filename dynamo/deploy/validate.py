"""`python -m dynamo.deploy validate FILE...`: schema, image and command-line checks of
DGD manifests. Every finding names its path; command-line findings name the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dynamo.deploy import model
from dynamo.deploy.commands import parse_command
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


def check_services(graph: model.Graph, report: Report) -> None:
    for name, svc in graph.spec.services.items():
        where = f"spec.services.{name}"
        container = svc.container
        if not container.image:
            report.errors.append(f"{where}.extraPodSpec.mainContainer.image: required (service {name} has no image)")
        if svc.componentType is None:
            report.warnings.append(f"{where}.componentType: not set; treated as a worker")
        if svc.multinode and svc.multinode.nodeCount > 1:
            report.warnings.append(f"{where}.multinode: multi-node services are not supported by `run`/`render`")
        line = parse_command(container.command, container.args)
        if not line.argv:
            report.errors.append(f"{where}.extraPodSpec.mainContainer.command: no command (the image has no "
                                 "entrypoint; give command/args)")
            continue
        if not line.invocations:
            report.warnings.append(f"{where}: command runs no `python -m dynamo.*` module; not checked")
        for inv in line.invocations:
            result = check_args(inv.module, inv.args)
            report.errors += [f"{where}.extraPodSpec.mainContainer.args: service {name}: {e}" for e in result.errors]
            report.warnings += [f"{where}: service {name}: {w}" for w in result.warnings]


def validate_document(doc: Any, report: Report, index: int) -> None:
    prefix = f"document {index}: " if index else ""
    problems = model.check(doc)
    report.errors += [f"{prefix}{path}: {message}" for path, message in problems]
    if problems:
        return
    graph = model.load(doc)
    report.graphs.append(graph)
    check_services(graph, report)


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

"""Image-pull secrets for `render`, as the operator assigns them.

The operator discovers the namespace's docker-config Secrets and gives every component
the ones whose registry matches its image's registry host, unless the component is
annotated `nvidia.com/disable-image-pull-secret-discovery: "true"`; explicit
`extraPodSpec.imagePullSecrets` (v1beta1: `podTemplate.spec.imagePullSecrets`) are
always kept. `render` cannot list a cluster, so the known secrets come from the command
line: `--pull-secret NAME=REGISTRY`, or `--pull-secrets-from FILE` holding Secret
objects (e.g. `kubectl get secrets -o yaml`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml

from dynamo.deploy.model import Service

DISABLE_ANNOTATION = "nvidia.com/disable-image-pull-secret-discovery"
_DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}


def registry_host(image: str) -> str:
    """The registry an image reference pulls from (Docker Hub when none is named)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return _normal(first)
    return "docker.io"


def _normal(host: str) -> str:
    host = host.split("://", 1)[-1].split("/", 1)[0].lower()
    return "docker.io" if host in _DOCKER_HUB else host


def parse_pull_secret(item: str) -> tuple[str, str]:
    name, sep, registry = item.partition("=")
    if not sep or not name or not registry:
        raise ValueError(f"--pull-secret expects NAME=REGISTRY, got {item!r}")
    return name, _normal(registry)


def secrets_from_file(path: str) -> list[tuple[str, str]]:
    """(secret name, registry host) for every docker-config Secret in a YAML file."""
    out = []
    with open(path, encoding="utf-8") as fh:
        docs = [d for d in yaml.safe_load_all(fh) if isinstance(d, dict)]
    items = [i for d in docs for i in (d.get("items") or [] if d.get("kind") == "List" else [d])]
    for obj in items:
        if obj.get("kind") != "Secret" or obj.get("type") not in ("kubernetes.io/dockerconfigjson",
                                                                  "kubernetes.io/dockercfg"):
            continue
        data = obj.get("data") or {}
        raw = data.get(".dockerconfigjson") or data.get(".dockercfg") or ""
        try:
            config = json.loads(base64.b64decode(raw))
        except (ValueError, TypeError):
            raise ValueError(f"{path}: secret {obj.get('metadata', {}).get('name')!r} has no readable docker config") \
                from None
        auths = config.get("auths", config) if isinstance(config, dict) else {}
        out += [(obj["metadata"]["name"], _normal(host)) for host in auths]
    return out


def pull_secrets(svc: Service, known: list[tuple[str, str]]) -> list[dict[str, Any]] | None:
    """The component's imagePullSecrets: explicit ones, plus discovered matches unless disabled."""
    pod = svc.extraPodSpec
    explicit = list((pod.imagePullSecrets if pod else None) or [])
    names = {e.get("name") for e in explicit if isinstance(e, dict)}
    if str(svc.annotation(DISABLE_ANNOTATION) or "").lower() != "true" and svc.container.image:
        host = registry_host(svc.container.image)
        for name, registry in known:
            if registry == host and name not in names:
                explicit.append({"name": name})
                names.add(name)
    return explicit or None

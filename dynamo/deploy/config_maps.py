"""ConfigMaps on one machine, for `run`: the ConfigMaps a manifest file defines beside its graphs (a
global router's plan, a planner's profile, a config file) are written under the run's state directory,
one file per key, and a service's `configMap` volume mounts are served from there, as a pod would see them:
a whole ConfigMap at its mountPath, `items` at their paths, a `subPath` mount as the one file. Each content
has its own directory, written once (`mounts`): a plan built for an apply never changes what running replicas read.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from typing import Any, NamedTuple

from dynamo.deploy.model import Service

KIND = "ConfigMap"


def collect(documents: list[Any]) -> dict[str, dict[str, bytes]]:
    """The file's ConfigMaps: name -> {key: content} (`data` and base64 `binaryData`)."""
    out: dict[str, dict[str, bytes]] = {}
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        name = (doc.get("metadata") or {}).get("name")
        if not name:
            continue
        files = {key: str(value).encode() for key, value in (doc.get("data") or {}).items()}
        files.update({key: base64.b64decode(value) for key, value in (doc.get("binaryData") or {}).items()})
        out[name] = files
    return out


def _write(directory: str, files: dict[str, bytes]) -> str:
    """`files` under `directory`, written once: the directory appears whole (written aside, then renamed into
    place) and is never rewritten, so a replica reading it never sees a file half-written or changed."""
    if os.path.isdir(directory):
        return directory
    aside = tempfile.mkdtemp(prefix=".writing-", dir=os.path.dirname(directory))
    for rel, content in files.items():
        path = os.path.join(aside, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content)
    try:
        os.rename(aside, directory)
    except OSError:  # written meanwhile by another plan of the same content
        shutil.rmtree(aside, ignore_errors=True)
    return directory


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return h.hexdigest()[:12]


def _volumes(svc: Service) -> dict[str, dict[str, Any]]:
    """The service's configMap volumes: volume name -> its `configMap` source."""
    pod = svc.extraPodSpec
    return {v["name"]: v["configMap"] for v in (pod.volumes if pod else None) or []
            if isinstance(v, dict) and v.get("name") and isinstance(v.get("configMap"), dict)}


def mounted(svc: Service, maps: dict[str, dict[str, bytes]]) -> list[tuple[dict, dict, str, dict[str, bytes]]]:
    """(volumeMount, configMap source, its ConfigMap's name, the files it shows) for each of `svc`'s mounts of
    a ConfigMap the file defines (with `items`: only those keys, at their paths)."""
    volumes = _volumes(svc)
    out = []
    for mount in svc.container.volumeMounts or []:
        if not isinstance(mount, dict) or mount.get("name") not in volumes or not mount.get("mountPath"):
            continue
        source = volumes[mount["name"]]
        files = maps.get(source.get("name", ""))
        if files is None:
            continue
        if source.get("items"):  # only the listed keys, each at its own path
            files = {item["path"]: files[item["key"]] for item in source["items"]
                     if isinstance(item, dict) and item.get("key") in files and item.get("path")}
        out.append((mount, source, source["name"], files))
    return out


def mounts(svc: Service, maps: dict[str, dict[str, bytes]], root: str) -> dict[str, str]:
    """Mount point -> local path for `svc`'s configMap mounts of the file's ConfigMaps (written under
    `root` on first use). A ConfigMap the file does not define is left out (see `missing`).

    The directory is named by its content (`NAME-<sha256[:12]>`): an apply that changes a ConfigMap writes a
    new one, and each plan's replicas keep reading their own plan's data (a rollout replaces them). Kubernetes
    does update a running pod's non-subPath ConfigMap volume eventually (never a subPath one); here a running
    replica's files never change under it."""
    out: dict[str, str] = {}
    os.makedirs(root, exist_ok=True)
    for mount, source, name, files in mounted(svc, maps):
        folder = f"{name}--{mount['name']}" if source.get("items") else name
        directory = _write(os.path.join(root, f"{folder}-{_digest(files)}"), files)
        sub = mount.get("subPath")
        out[mount["mountPath"]] = os.path.join(directory, sub) if sub else directory
    return out


class Served(NamedTuple):
    """A path of a pod under a mount of one of the file's ConfigMaps: which, where, the file it names there,
    and that file's content (None: the ConfigMap, as mounted, has no such key: the pod finds no file)."""

    configmap: str
    mount_path: str
    key: str
    content: bytes | None


def served(svc: Service, maps: dict[str, dict[str, bytes]], path: str) -> Served | None:
    """How `svc`'s pod sees `path` when it is under a mount of a ConfigMap of the file; None when it is not."""
    for mount, _, name, files in mounted(svc, maps):
        point = mount["mountPath"].rstrip("/")
        sub = mount.get("subPath")
        if sub and path == point:
            return Served(name, mount["mountPath"], sub, files.get(sub))
        if not sub and path.startswith(point + "/"):
            key = path[len(point) + 1:]
            return Served(name, mount["mountPath"], key, files.get(key))
    return None


def content(svc: Service, maps: dict[str, dict[str, bytes]], path: str) -> bytes | None:
    """What `svc`'s pod reads at `path` when a ConfigMap of the file serves it; None otherwise (`served` tells
    a path under no such mount from a key the ConfigMap lacks)."""
    found = served(svc, maps, path)
    return found.content if found else None


def missing(svc: Service, maps: dict[str, dict[str, bytes]]) -> list[str]:
    """ConfigMaps `svc` mounts (not `optional`) that the file does not define."""
    return sorted({source.get("name", "") for source in _volumes(svc).values()
                   if source.get("name") not in maps and not source.get("optional")})

"""Pod paths on one machine, for `run`.

- `/tmp`: every pod has its own, so every replica gets a private directory for it. Paths
  under `/tmp` in the manifest's command line and exec probes (`... | tee /tmp/worker.log`
  and `grep ... /tmp/worker.log`) are rewritten to it, and TMPDIR points at it; so the
  replicas of one service never read each other's files. A `/tmp/...` directory that
  exists on this machine (a model under /tmp, say) is taken as this machine's own.
- PVC mounts: `--volume PVC=DIR` maps the mount point of PVC `PVC` to a local directory.
- Hugging Face cache paths: a model given in HF's cache layout
  (`<HF_HOME>/hub/models--ORG--NAME/snapshots/REV`, the layout a `modelCache` PVC holds)
  resolves in this machine's HF cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub).
- Hugging Face ids (`Qwen/Qwen3-0.6B`, what the profiler's DGDs name): looked up in the same caches as
  the workers do; one not cached is fetched once (config and tokenizer files, as Dynamo's mocker
  prefetches them), so a model that cannot be had stops `run` before any replica crash-loops on it;
  so does a model path that does not exist here (`check_exists`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from dynamo.deploy.model import Service
from dynamo.worker.hub_cache import cached_snapshot, is_repo_id
from dynamo.worker.model_files import local_model_dir

log = logging.getLogger("dynamo.deploy")

# /tmp at the start of a word, or of a URL's path (`ipc:///tmp/kv`), not inside another path.
_POD_TMP = re.compile(r"(?:(?<=://)|(?<![\w./-]))/tmp(/[^\s'\"|;&<>(),]*)?")
_HF_SNAPSHOT = re.compile(r"(?:^|/)(models--[^/]+)/snapshots/([^/]+)(/.*)?$")
HF_ENV = ("HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE")


def private_tmp(text: str, tmp_dir: str) -> str:
    """`text` with pod-local /tmp paths moved under `tmp_dir`."""
    def swap(m: re.Match) -> str:
        rest = m.group(1) or ""
        # This machine's own files: a directory, or anything two levels down (tmp_path trees).
        if rest.strip("/") and (os.path.isdir(m.group(0)) or (rest.strip("/").count("/") and
                                                             os.path.exists(m.group(0)))):
            return m.group(0)
        return tmp_dir + rest
    return _POD_TMP.sub(swap, text)


def private_tmp_probe(probe: dict[str, Any], tmp_dir: str) -> dict[str, Any]:
    if "exec" not in probe:
        return probe
    command = [private_tmp(str(part), tmp_dir) for part in probe["exec"].get("command") or []]
    return {**probe, "exec": {**probe["exec"], "command": command}}


def mount_points(svc: Service, pvc: str) -> list[str]:
    """Where `svc`'s pods see PVC `pvc` (DGD `volumeMounts` and native container mounts)."""
    points = [m.mountPoint for m in svc.volumeMounts or [] if m.name == pvc and m.mountPoint]
    pod = svc.extraPodSpec
    names = {pvc} | {v.get("name") for v in (pod.volumes if pod else None) or []
                     if isinstance(v, dict) and (v.get("persistentVolumeClaim") or {}).get("claimName") == pvc}
    points += [m.get("mountPath") for m in svc.container.volumeMounts or []
               if isinstance(m, dict) and m.get("name") in names and m.get("mountPath")]
    return points


def map_volumes(text: str, mapping: dict[str, str]) -> str:
    """Replace a leading pod mount point (longest first) with its local directory."""
    for point in sorted(mapping, key=len, reverse=True):
        base = point.rstrip("/")
        if text == base or text.startswith(base + "/"):
            return mapping[point].rstrip("/") + text[len(base):]
    return text


def hf_hubs(environ: dict[str, str]) -> list[Path]:
    hubs = []
    if environ.get("HF_HUB_CACHE"):
        hubs.append(Path(environ["HF_HUB_CACHE"]))
    if environ.get("HF_HOME"):
        hubs.append(Path(environ["HF_HOME"]) / "hub")
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    hubs.append(Path(xdg) / "huggingface" / "hub")
    return list(dict.fromkeys(hubs))


def is_hf_snapshot(path: str) -> bool:
    return bool(_HF_SNAPSHOT.search(path))


def resolve_hf_snapshot(path: str, environ: dict[str, str]) -> str:
    """The local directory of an HF-cache-layout path; LookupError says how to get it."""
    match = _HF_SNAPSHOT.search(path)
    if match is None:
        raise LookupError(f"{path} is not in Hugging Face's cache layout")
    repo_dir, rev, rest = match.group(1), match.group(2), match.group(3) or ""
    hubs = hf_hubs(environ)
    for hub in hubs:
        snapshot = hub / repo_dir / "snapshots" / rev
        if snapshot.is_dir():
            return str(snapshot) + rest
    for hub in hubs:  # the pinned revision is not here: the cached `main` is the next best
        ref = hub / repo_dir / "refs" / "main"
        if ref.is_file():
            snapshot = hub / repo_dir / "snapshots" / ref.read_text().strip()
            if snapshot.is_dir():
                log.warning("model %s: revision %s is not cached here; using cached main (%s)", path, rev,
                            snapshot.name)
                return str(snapshot) + rest
    model_id = repo_dir[len("models--"):].replace("--", "/", 1)
    raise LookupError(f"model {path}: {model_id} revision {rev} is not in this machine's Hugging Face cache "
                      f"({', '.join(map(str, hubs))}); run `huggingface-cli download {model_id} --revision {rev}` "
                      "or pass --model DIR")


def resolve_hub_id(model_id: str, environ: dict[str, str]) -> str:
    """A worker's Hugging Face id as it can load here. Cached in the workers' own cache (the first of
    `hf_hubs`): the id, unchanged, so an engine that needs weights still fetches missing ones itself.
    Cached in another of this machine's caches only: that snapshot directory (the worker would not look
    there). Not cached: its config and tokenizer are fetched into the workers' cache now, once for every
    replica; LookupError (before anything starts) when that fails: offline, unknown or gated."""
    hubs = hf_hubs(environ)
    for i, hub in enumerate(hubs):
        snapshot = cached_snapshot(model_id, cache_dir=hub)
        if snapshot:
            return model_id if i == 0 else snapshot
    try:
        local_model_dir(model_id, cache_dir=str(hubs[0]) if hubs else None)  # into the workers' own cache
    except Exception as exc:  # huggingface_hub's errors differ by cause; each ends the same way here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LookupError(f"model {model_id} is not in this machine's Hugging Face cache "
                          f"({', '.join(map(str, hubs))}) and cannot be downloaded ({reason}); run "
                          f"`huggingface-cli download {model_id}` or pass --model DIR") from None
    log.info("model %s: fetched its config and tokenizer into the Hugging Face cache", model_id)
    return model_id


def local_model(value: str, environ: dict[str, str]) -> str:
    """A worker's model argument as it can load here: an existing path unchanged, an HF-cache-layout path
    or a Hugging Face id resolved in this machine's caches (LookupError: not to be had here)."""
    if os.path.exists(value):
        return value
    if is_hf_snapshot(value):
        return resolve_hf_snapshot(value, environ)
    if is_repo_id(value):
        return resolve_hub_id(value, environ)
    return value


def check_exists(value: str | None) -> None:
    """LookupError when a worker's model (as `local_model` left it) is neither a path on this machine nor a
    Hugging Face id: a pod's path (`/opt/models/...`, a PVC's) that nothing maps here. The worker could only
    crash-loop on it, so `run` stops before anything starts, as for an id it cannot get."""
    if not value or os.path.exists(os.path.expanduser(value)) or is_repo_id(value):
        return
    raise LookupError(f"model {value} does not exist on this machine; pass --model DIR (a local copy of the model), "
                      "or --volume PVC=DIR when the manifest reads it from a PVC's mount")

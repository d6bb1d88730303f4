"""From a chosen configuration to what the profiler hands back, as NVIDIA Dynamo 1.6.1's profiler writes it:
`final_config.yaml` is `[ConfigMap..., DGD]`, the DynamoGraphDeployment `nvidia.com/v1beta1`
(`spec.components[]` of `{name, type, replicas, podTemplate}`, the Dynamo process in the pod template's
container named `main`). This module owns the graph's layout (Frontend + `<Backend>Worker` or
`<Backend>Prefill/DecodeWorker`, + Planner), its images, and the ConfigMaps beside it, in the DGD's namespace:
the planner's config (`planner-config-XXXX`, key `planner_config.json`, mounted at PLANNER_CONFIG_MOUNT) and the
profile data (`planner-profile-data-XXXX`, mounted at PROFILE_MOUNT in the Planner and in mocker workers). Their
names end in 4 hex characters as Dynamo's do, of a digest of the request's name and what they hold (Dynamo's are
random), so profiling the same request again writes the same file. Engine flags: `engine_args.py`;
`spec.overrides.dgd`: `overrides.py`; `dynamo.deploy validate` checks the result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamo.deploy.model import API_VERSION_V1BETA1 as DGD_API
from dynamo.deploy.model import GPU_RESOURCE
from dynamo.llm.perf_data import DECODE_JSON, PREFILL_JSON
from dynamo.profiler.dgd_v1alpha1 import MAIN
from dynamo.profiler.dgdr import Request
from dynamo.profiler.engine_args import worker_args
from dynamo.profiler.overrides import apply_override

IMAGE = "dynamo-serve-cuda:0.1.0"
# Dynamo's published image names, which its profiler derives the DGD's images from (`profile_common.py`)
DYNAMO_RUNTIME = {"vllm": "vllm-runtime", "sglang": "sglang-runtime", "trtllm": "tensorrtllm-runtime"}
DYNAMO_PLANNER = "dynamo-planner"
PREFIX = {"vllm": "Vllm", "sglang": "Sglang", "trtllm": "Trtllm", "mocker": "Mocker"}
MAX_NAME = 45  # Dynamo: len(dgd name) + len(component) must stay within this
HF_TOKEN_SECRET = "hf-token-secret"
WORKSPACE = "/workspace"
# Where pods see the ConfigMaps, as in Dynamo ({workspace}/...): fixed paths, so the manifest says nothing of the
# machine that profiled; `dynamo.deploy run` maps them to its local copies (in args and env, not inside files).
PROFILE_MOUNT = f"{WORKSPACE}/profiling_results"
PROFILE_DIR_ENV = "DYN_PLANNER_PROFILE_RESULTS_DIR"  # the planner's view of it, which `run` maps too
PLANNER_CONFIG_MOUNT = f"{WORKSPACE}/planner_config"
PLANNER_CONFIG_KEY = "planner_config.json"


@dataclass
class WorkerChoice:
    role: str  # agg | prefill | decode
    tp: int = 1
    pp: int = 1
    dp: int = 1
    replicas: int = 1
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    moe_tp: int | None = None  # MoE parallelism of AIConfigurator's pick (None: dense model, or not known)
    moe_ep: int | None = None

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp


@dataclass
class Choice:
    """What profiling picked, the figures it expects, and how sure it is."""

    mode: str  # agg | disagg
    workers: list[WorkerChoice]
    source: str  # aiconfigurator | measured | memory-fit
    expected: dict[str, float] = field(default_factory=dict)  # ttft_ms, itl_ms, thpt_per_gpu, ...
    sla_met: bool | None = None  # None: unverified
    notes: list[str] = field(default_factory=list)

    @property
    def total_gpus(self) -> int:
        return sum(w.gpus * w.replicas for w in self.workers)


def dgd_backend(req: Request) -> str:
    return "mocker" if req.spec.mocker else (req.spec.backend if req.spec.backend != "auto" else "vllm")


def dgd_name(req: Request) -> str:
    override = ((req.spec.overrides.dgd or {}) if req.spec.overrides else {}).get("metadata", {}).get("name")
    return override or f"{req.metadata.name}-dgd"


def _worker_name(backend: str, role: str) -> str:
    return f"{PREFIX[backend]}{'Worker' if role == 'agg' else role.capitalize() + 'Worker'}"


# ----- the v1beta1 component shape ---------------------------------------------------------------------

def components(dgd: dict[str, Any]) -> list[dict[str, Any]]:
    return dgd["spec"]["components"]


def component(dgd: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in components(dgd) if c.get("name") == name), None)


def main_container(comp: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in comp["podTemplate"]["spec"]["containers"] if c.get("name") == MAIN)


def _component(name: str, kind: str, replicas: int, image: str, module: str, args: list[str]) -> dict[str, Any]:
    main = {"name": MAIN, "image": image, "workingDir": WORKSPACE, "command": ["python3", "-m", module],
            "args": args}
    return {"name": name, "type": kind, "replicas": replicas, "podTemplate": {"spec": {"containers": [main]}}}


def _mount(comp: dict[str, Any], volume: dict[str, Any], path: str, read_only: bool = False) -> None:
    """`volume` (a pod volume) seen at `path` by the component's main container."""
    comp["podTemplate"]["spec"].setdefault("volumes", []).append(volume)
    mount = {"name": volume["name"], "mountPath": path, **({"readOnly": True} if read_only else {})}
    main_container(comp).setdefault("volumeMounts", []).append(mount)


def _mount_configmap(comp: dict[str, Any], name: str, path: str) -> None:
    """As Dynamo mounts its ConfigMaps: a volume named after the ConfigMap, read-only."""
    _mount(comp, {"name": name, "configMap": {"name": name}}, path, read_only=True)


def _env(comp: dict[str, Any], name: str, value: str) -> None:
    main_container(comp).setdefault("env", []).append({"name": name, "value": value})


# ----- images and the model's location ---------------------------------------------------------------

def _model_location(req: Request) -> tuple[str, tuple[str, str] | None]:
    """(the model as the workers name it, (PVC, its mount path) when it comes from the model cache)."""
    cache = req.spec.modelCache
    if cache and cache.pvcName:
        pvc = (cache.pvcName, cache.pvcMountPath)
        if cache.pvcModelPath and cache.pvcModelPath.startswith("/"):  # already a path in the container
            return cache.pvcModelPath, pvc  # (joining it to the mount path doubled it: Dynamo #8469)
        sub = (cache.pvcModelPath or req.spec.model).strip("/")
        return f"{cache.pvcMountPath.rstrip('/')}/{sub}", pvc
    return req.spec.model, None


def _split_image(ref: str) -> tuple[str, str, str]:
    """(registry path with its slash, name, `:tag` and/or `@digest`) of an image reference."""
    head, _, last = ref.rpartition("/")
    name, at, digest = last.partition("@")
    name, colon, tag = name.partition(":")
    return (head + "/" if head else ""), name, (colon + tag) + (at + digest)


def images(req: Request, backend: str) -> tuple[str, str]:
    """(the graph's image, the planner's): the request's `spec.image` where given, else ours. One of
    Dynamo's images (`.../dynamo-planner:1.6.1`, `.../vllm-runtime:1.6.1`, ...) is read as Dynamo's
    profiler reads it: the profiling image, from which the backend's runtime image (a mocker graph: the
    image itself) and the planner's are derived, same registry and tag. Any other image (ours) runs
    every component as given."""
    if not req.spec.image:
        return IMAGE, IMAGE
    path, name, tag = _split_image(req.spec.image)
    if name not in (*DYNAMO_RUNTIME.values(), DYNAMO_PLANNER):
        return req.spec.image, req.spec.image
    graph = req.spec.image if backend == "mocker" else f"{path}{DYNAMO_RUNTIME[backend]}{tag}"
    return graph, f"{path}{DYNAMO_PLANNER}{tag}"


# ----- the ConfigMaps --------------------------------------------------------------------------------

def _configmap(req: Request, prefix: str, data: dict[str, str]) -> dict[str, Any]:
    """`<prefix>-XXXX`, as Dynamo names its ConfigMaps (4 hex characters; here of a digest of the request's
    name and the data: a rerun is byte-identical, and two requests' identical data do not share one). Its
    namespace is the DGD's, given by `final_documents`."""
    text = json.dumps(data, sort_keys=True)
    digest = hashlib.sha256(f"{req.metadata.name}\n{text}".encode()).hexdigest()[:4]
    metadata = {"name": f"{prefix}-{digest}", "labels": {"dgdr.nvidia.com/name": req.metadata.name}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _in_namespace(doc: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    """`doc` placed in `namespace` (none: wherever it is applied), beside the DGD that mounts it."""
    meta = {k: v for k, v in doc["metadata"].items() if k != "namespace"}
    placed = {"name": meta.pop("name"), **({"namespace": namespace} if namespace else {}), **meta}
    return {**doc, "metadata": placed}


def profile_configmap(req: Request, profile_dir: Path) -> dict[str, Any]:
    """`planner-profile-data-XXXX`: the interpolation data's JSON twins, one key each."""
    data = {js: (profile_dir / js).read_text() for js in (PREFILL_JSON, DECODE_JSON) if (profile_dir / js).is_file()}
    return _configmap(req, "planner-profile-data", data)


def planner_config(req: Request, backend: str, profile_results_dir: str | None, mode: str = "disagg",
                   workers: list[WorkerChoice] | None = None) -> dict[str, Any]:
    """The request's PlannerConfig passed through, with what Dynamo's profiler adds where it sets none: the
    model, the GPUs of each chosen engine (`workers`; the GPU budget counts them), the SLA it states, the
    profile to read, and `mode: agg` for an aggregated graph (the planner's default, disagg, would look for
    prefill and decode pools it does not have)."""
    config = {"backend": backend, **(req.spec.features.planner or {})}
    if mode == "agg":
        config.setdefault("mode", "agg")
    config.setdefault("model_name", req.spec.model)  # the served name, which the workers register
    for w in workers or []:  # an agg engine is the planner's one pool, which it calls decode
        config.setdefault(f"{'prefill' if w.role == 'prefill' else 'decode'}_engine_num_gpu", w.gpus)
    for key in ("ttft", "itl"):  # as Dynamo: the SLA the user stated (not the defaults) is the planner's,
        value = getattr(req.spec.sla, key)  # unless its own config says otherwise
        if value is not None and key not in config and f"{key}_ms" not in config:
            config[f"{key}_ms"] = float(value)
    if profile_results_dir is not None:
        config["profile_results_dir"] = profile_results_dir
    return config


def planner_configmap(req: Request, choice: Choice, profile_cm: str | None) -> dict[str, Any]:
    """`planner-config-XXXX`: the planner's config for `choice`, key PLANNER_CONFIG_KEY."""
    config = planner_config(req, dgd_backend(req), PROFILE_MOUNT if profile_cm else None, choice.mode, choice.workers)
    return _configmap(req, "planner-config", {PLANNER_CONFIG_KEY: json.dumps(config, sort_keys=True)})


def scaled_pools(config: dict[str, Any]) -> tuple[str, ...]:
    """The pools (`prefill`, `decode`: an aggregated worker is the planner's decode pool) a planner with `config`
    scales, as its `roles` say; none when it is advisory (Dynamo then opts none into the scaling adapter)."""
    from dynamo.planner.config import PlannerConfig

    if config.get("advisory"):
        return ()
    return PlannerConfig(mode=config.get("mode", "disagg")).roles


# ----- the components --------------------------------------------------------------------------------

def _frontend(req: Request, image: str) -> dict[str, Any]:
    frontend = _component("Frontend", "frontend", 1, image, "dynamo.frontend", ["--http-port", "8000"])
    main_container(frontend)["envFrom"] = [{"secretRef": {"name": HF_TOKEN_SECRET}}]  # as in Dynamo's templates
    if req.spec.kv_router:  # as Dynamo: the env twin, so a `--router-mode` an override adds still wins
        _env(frontend, "DYN_ROUTER_MODE", "kv")
    return frontend


def _worker(req: Request, backend: str, w: WorkerChoice, image: str, profile_cm: str | None) -> dict[str, Any]:
    model, pvc = _model_location(req)
    replay = backend == "mocker" and profile_cm is not None
    args = worker_args(req, backend, w, model, PROFILE_MOUNT if replay else None)
    kind = "worker" if w.role == "agg" else w.role
    worker = _component(_worker_name(backend, w.role), kind, w.replicas, image, f"dynamo.{backend}", args)
    main_container(worker)["envFrom"] = [{"secretRef": {"name": HF_TOKEN_SECRET}}]  # mockers too, as Dynamo's
    if backend != "mocker":
        main_container(worker)["resources"] = {"limits": {GPU_RESOURCE: str(w.gpus)}}
    if pvc:
        _mount(worker, {"name": pvc[0], "persistentVolumeClaim": {"claimName": pvc[0]}}, pvc[1])
    if replay:
        _mount_configmap(worker, profile_cm, PROFILE_MOUNT)
    return worker


def _planner(req: Request, image: str, choice: Choice, profile_cm: str | None) -> dict[str, Any]:
    """The Planner reads its config from the planner-config ConfigMap's mount, and its profile from the
    profile-data one. That path is in its env too: the config file's `profile_results_dir` is the pod's
    path, which `dynamo.deploy run` cannot map inside a file, but does map in env."""
    config_cm = planner_configmap(req, choice, profile_cm)["metadata"]["name"]
    args = ["--config", f"{PLANNER_CONFIG_MOUNT}/{PLANNER_CONFIG_KEY}"]
    planner = _component("Planner", "planner", 1, image, "dynamo.planner", args)
    _mount_configmap(planner, config_cm, PLANNER_CONFIG_MOUNT)
    if profile_cm:
        _mount_configmap(planner, profile_cm, PROFILE_MOUNT)
        _env(planner, PROFILE_DIR_ENV, PROFILE_MOUNT)
    return planner


def build_dgd(req: Request, choice: Choice, configmap: str | None = None) -> dict[str, Any]:
    """The DGD for `choice`, overrides applied. `configmap` names the profile-data ConfigMap (beside the DGD
    in the same file): mocker workers replay it and the planner seeds its perf models from it, both reading
    it at PROFILE_MOUNT. The Planner mounts `planner_configmap(...)`, which `final_documents` puts beside it."""
    name = dgd_name(req)
    backend = dgd_backend(req)
    image, planner_image = images(req, backend)
    workers = [_worker(req, backend, w, image, configmap) for w in choice.workers]
    comps = [_frontend(req, image)] + workers
    if req.spec.planner:
        comps.append(_planner(req, planner_image, choice, configmap))
        # Dynamo: the pools the planner scales opt into the scaling adapter (DGDSA), which then owns their replicas
        scaled = scaled_pools(planner_config(req, backend, None, choice.mode))
        for w, comp in zip(choice.workers, workers):
            if ("prefill" if w.role == "prefill" else "decode") in scaled:
                comp["scalingAdapter"] = {"enabled": True}
    longest = max(len(c["name"]) for c in comps)
    if len(name) + longest > MAX_NAME:
        raise ValueError(f"DGD name {name!r} is too long: with component {longest} characters it exceeds {MAX_NAME} "
                         "(set metadata.name shorter or overrides.dgd.metadata.name)")
    labels = {"dgdr.nvidia.com/name": req.metadata.name, "dgdr.nvidia.com/namespace": req.metadata.namespace or
              "default"}
    metadata: dict[str, Any] = {"name": name}
    if req.metadata.namespace:
        metadata["namespace"] = req.metadata.namespace
    metadata["labels"] = labels
    spec: dict[str, Any] = {"backendFramework": backend} if backend != "mocker" else {}
    dgd = {"apiVersion": DGD_API, "kind": "DynamoGraphDeployment", "metadata": metadata,
           "spec": {**spec, "components": comps}}
    override = req.spec.overrides.dgd if req.spec.overrides else None
    dgd = apply_override(dgd, override) if override else dgd
    if req.spec.planner:  # after the override, which names the aggregated worker as generated (Dynamo's order too)
        _agg_worker_as_decode(dgd, planner_config(req, backend, None, choice.mode))
    return dgd


def _agg_worker_as_decode(dgd: dict[str, Any], config: dict[str, Any]) -> None:
    """As Dynamo's profiler: a planner that scales an aggregated graph (`mode: agg`, not advisory) has one pool,
    which it calls decode, so the graph's one aggregated worker is typed `decode` for the planner to find it by
    type, as it finds a disaggregated graph's pools. Only the type changes: the engine still serves whole
    requests (no disaggregation flag), and stays opted into the scaling adapter."""
    if config.get("mode", "disagg") != "agg" or "decode" not in scaled_pools(config):
        return
    untyped = [c for c in components(dgd) if c.get("type") == "worker"]
    if len(untyped) == 1:
        untyped[0]["type"] = "decode"


def final_documents(req: Request, choice: Choice, profile_cm: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`final_config.yaml`'s documents in Dynamo's order: the ConfigMaps (planner config, profile data), then
    the DGD that mounts them. The ConfigMaps go where the DGD goes (an override may move it: a pod waits for a
    ConfigMap of its own namespace)."""
    profile_name = profile_cm["metadata"]["name"] if profile_cm else None
    dgd = build_dgd(req, choice, configmap=profile_name)
    docs = [planner_configmap(req, choice, profile_name)] if req.spec.planner else []
    docs += [profile_cm] if profile_cm else []
    return [_in_namespace(d, dgd["metadata"].get("namespace")) for d in docs] + [dgd]

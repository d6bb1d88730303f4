"""From a chosen configuration to our DynamoGraphDeployment (`nvidia.com/v1alpha1`): the request's
image (else ours), our CLIs and our component layout (Frontend + `<Backend>Worker` or
`<Backend>Prefill/DecodeWorker`), plus the mocker variant and the profile-data ConfigMap.
`dynamo.deploy validate` checks the result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamo.llm.perf_data import DECODE_JSON, PREFILL_JSON
from dynamo.profiler.dgdr import Request
from dynamo.profiler.overrides import apply_override

IMAGE = "dynamo-serve-cuda:0.1.0"
# Dynamo's published image names, which its profiler derives the DGD's images from (`profile_common.py`)
DYNAMO_RUNTIME = {"vllm": "vllm-runtime", "sglang": "sglang-runtime", "trtllm": "tensorrtllm-runtime"}
DYNAMO_PLANNER = "dynamo-planner"
DGD_API = "nvidia.com/v1alpha1"
PREFIX = {"vllm": "Vllm", "sglang": "Sglang", "trtllm": "Trtllm", "mocker": "Mocker"}
MAX_NAME = 45  # Dynamo: len(dgd name) + len(component) must stay within this
VLLM_KV_TRANSFER = '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'
# Where pods see the profile-data ConfigMap, as in Dynamo ({workspace}/profiling_results): a fixed path, so
# the manifest says nothing of the machine that profiled; `dynamo.deploy run` maps it to its local copy.
PROFILE_MOUNT = "/workspace/profiling_results"
PROFILE_DIR_ENV = "DYN_PLANNER_PROFILE_RESULTS_DIR"  # the planner's view of it, which `run` maps too


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


def _service_name(backend: str, role: str) -> str:
    return f"{PREFIX[backend]}{'Worker' if role == 'agg' else role.capitalize() + 'Worker'}"


def _mocker_args(req: Request, w: WorkerChoice, model: str, profiled: bool) -> list[str]:
    args = ["--model-path", model, "--model-name", req.spec.model, "--disaggregation-mode", w.role,
            "--speedup-ratio", "1.0"]
    if w.max_num_seqs:
        args += ["--max-num-seqs", str(w.max_num_seqs)]
    if w.max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(w.max_num_batched_tokens)]
    # the mocker replays the profiled (or AIConfigurator-estimated) timings the profiler judged the SLA by
    return args + (["--planner-profile-data", PROFILE_MOUNT] if profiled else [])


def _served_name(req: Request, model: str) -> list[str]:
    return ["--served-model-name", req.spec.model] if model != req.spec.model else []


def _trust_remote_code(req: Request) -> bool:
    return bool(req.spec.overrides and req.spec.overrides.trustRemoteCode)


def _vllm_args(req: Request, w: WorkerChoice, model: str) -> list[str]:
    args = ["--model", model, *_served_name(req, model), "--tensor-parallel-size", str(w.tp)]
    if w.pp > 1:
        args += ["--pipeline-parallel-size", str(w.pp)]
    if w.dp > 1:
        args += ["--data-parallel-size", str(w.dp)]
    if w.max_num_seqs:
        args += ["--max-num-seqs", str(w.max_num_seqs)]
    if w.max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(w.max_num_batched_tokens)]
    if w.role != "agg":
        args += ["--disaggregation-mode", w.role, "--kv-transfer-config", VLLM_KV_TRANSFER]
    return args + (["--trust-remote-code"] if _trust_remote_code(req) else [])


def _sglang_args(req: Request, w: WorkerChoice, model: str) -> list[str]:
    """SGLang's own ServerArgs, as Dynamo's sglang templates and AIConfigurator's generator write them.
    Attention data parallelism is SGLang's `--dp-size` inside a `--tp` that spans the engine's GPUs."""
    args = ["--model-path", model, *_served_name(req, model), "--tp", str(w.tp * w.dp)]
    if w.pp > 1:
        args += ["--pipeline-parallel-size", str(w.pp)]
    if w.dp > 1:
        args += ["--dp-size", str(w.dp), "--enable-dp-attention"]
    if w.moe_ep and w.moe_ep > 1:
        args += ["--ep-size", str(w.moe_ep)]
    if w.max_num_seqs:
        args += ["--max-running-requests", str(w.max_num_seqs)]
    if w.max_num_batched_tokens:
        args += ["--chunked-prefill-size", str(w.max_num_batched_tokens)]
    if w.role != "agg":
        args += ["--disaggregation-mode", w.role, "--disaggregation-transfer-backend", "nixl"]
    return args + (["--trust-remote-code"] if _trust_remote_code(req) else [])


def _trtllm_args(req: Request, w: WorkerChoice, model: str) -> list[str]:
    """Dynamo's TRT-LLM worker flags (it owns the engine config), as AIConfigurator's generator writes
    them; what has no flag goes as `--trtllm.<key>` (Dynamo's profiler does the same)."""
    args = ["--model-path", model, *_served_name(req, model), "--tensor-parallel-size", str(w.tp * w.dp)]
    if w.pp > 1:
        args += ["--pipeline-parallel-size", str(w.pp)]
    if w.dp > 1:
        args.append("--enable-attention-dp")
    if w.moe_ep and w.moe_ep > 1:
        args += ["--expert-parallel-size", str(w.moe_ep)]
    if w.max_num_seqs:
        args += ["--max-batch-size", str(w.max_num_seqs)]
    if w.max_num_batched_tokens:
        args += ["--max-num-tokens", str(w.max_num_batched_tokens)]
    if w.role != "agg":  # the KV moves through TRT-LLM's cache transceiver, which a context server needs
        args += ["--disaggregation-mode", w.role, "--trtllm.cache_transceiver_config.backend", "DEFAULT"]
    if w.role == "prefill":  # to run context-only (TRT-LLM's disaggregated serving guide)
        args += ["--trtllm.disable_overlap_scheduler", "true"]
    return args + (["--trtllm.trust_remote_code", "true"] if _trust_remote_code(req) else [])


_ENGINE_ARGS = {"vllm": _vllm_args, "sglang": _sglang_args, "trtllm": _trtllm_args}


def _worker_args(req: Request, backend: str, w: WorkerChoice, model: str, profiled: bool) -> list[str]:
    """The worker's command line in its engine's own flags (each engine's parser refuses the others')."""
    if backend == "mocker":
        return _mocker_args(req, w, model, profiled)
    return _ENGINE_ARGS[backend](req, w, model)


def _container(image: str, module: str, args: list[str]) -> dict[str, Any]:
    return {"image": image, "workingDir": "/workspace", "command": ["python3", "-m", module], "args": args}


def _model_location(req: Request) -> tuple[str, list[dict[str, Any]] | None]:
    cache = req.spec.modelCache
    if cache and cache.pvcName:
        mount = [{"name": cache.pvcName, "mountPoint": cache.pvcMountPath}]
        if cache.pvcModelPath and cache.pvcModelPath.startswith("/"):  # already a path in the container
            return cache.pvcModelPath, mount  # (joining it to the mount path doubled it: Dynamo #8469)
        sub = (cache.pvcModelPath or req.spec.model).strip("/")
        return f"{cache.pvcMountPath.rstrip('/')}/{sub}", mount
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


def profile_configmap(name: str, profile_dir: Path) -> dict[str, Any]:
    data = {js: (profile_dir / js).read_text() for js in (PREFILL_JSON, DECODE_JSON) if (profile_dir / js).is_file()}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"planner-profile-data-{digest}",
                                                                  "labels": {"dgdr.nvidia.com/name": name}},
            "data": data}


def _mount_profile(pod: dict[str, Any], configmap: str) -> None:
    """Mount the profile-data ConfigMap at PROFILE_MOUNT in the pod's main container."""
    pod["volumes"] = [{"name": "profile-data", "configMap": {"name": configmap}}]
    pod["mainContainer"]["volumeMounts"] = [{"name": "profile-data", "mountPath": PROFILE_MOUNT}]


def _frontend(req: Request, image: str) -> dict[str, Any]:
    frontend: dict[str, Any] = {"componentType": "frontend", "replicas": 1,
                                "extraPodSpec": {"mainContainer": _container(image, "dynamo.frontend",
                                                                             ["--http-port", "8000"])}}
    if req.spec.kv_router:
        frontend["envs"] = [{"name": "DYN_ROUTER_MODE", "value": "kv"}]
    return frontend


def _worker(req: Request, backend: str, w: WorkerChoice, image: str, configmap: str | None) -> dict[str, Any]:
    model, mounts = _model_location(req)
    replay = backend == "mocker" and configmap is not None
    svc: dict[str, Any] = {"componentType": "worker", "replicas": w.replicas,
                           "extraPodSpec": {"mainContainer": _container(
                               image, f"dynamo.{backend}", _worker_args(req, backend, w, model, replay))}}
    if w.role != "agg":
        svc["subComponentType"] = w.role
    if backend != "mocker":
        svc["resources"] = {"limits": {"gpu": str(w.gpus)}}
        svc["envFromSecret"] = "hf-token-secret"
    if mounts:
        svc["volumeMounts"] = mounts
    if replay:
        _mount_profile(svc["extraPodSpec"], configmap)
    return svc


def build_dgd(req: Request, choice: Choice, configmap: str | None = None) -> dict[str, Any]:
    """The DGD for `choice`. `configmap` names the profile-data ConfigMap (beside the DGD in the same file):
    mocker workers replay it and the planner seeds its perf models from it, both reading it at
    PROFILE_MOUNT."""
    name = dgd_name(req)
    backend = dgd_backend(req)
    image, planner_image = images(req, backend)
    services: dict[str, Any] = {"Frontend": _frontend(req, image)}
    for w in choice.workers:
        services[_service_name(backend, w.role)] = _worker(req, backend, w, image, configmap)
    if req.spec.planner:
        services["Planner"] = planner_service(req, backend, planner_image, configmap, choice.mode)
    longest = max(len(s) for s in services)
    if len(name) + longest > MAX_NAME:
        raise ValueError(f"DGD name {name!r} is too long: with component {longest} characters it exceeds {MAX_NAME} "
                         "(set metadata.name shorter or overrides.dgd.metadata.name)")
    labels = {"dgdr.nvidia.com/name": req.metadata.name, "dgdr.nvidia.com/namespace": req.metadata.namespace or
              "default"}
    dgd: dict[str, Any] = {"apiVersion": DGD_API, "kind": "DynamoGraphDeployment",
                           "metadata": {"name": name, "labels": labels}, "spec": {"services": services}}
    if req.metadata.namespace:
        dgd["metadata"]["namespace"] = req.metadata.namespace
    if backend != "mocker":
        dgd["spec"]["backendFramework"] = backend
    _, mounts = _model_location(req)
    if mounts:
        dgd["spec"]["pvcs"] = [{"name": mounts[0]["name"], "create": False}]
    override = req.spec.overrides.dgd if req.spec.overrides else None
    return apply_override(dgd, override) if override else dgd


def planner_config(req: Request, backend: str, profile_results_dir: str | None,
                   mode: str = "disagg") -> dict[str, Any]:
    """The request's PlannerConfig passed through, with the SLA it states, the profile to read, and
    `mode: agg` for an aggregated graph (the planner's default, disagg, would look for prefill and
    decode pools it does not have)."""
    config = {"backend": backend, **(req.spec.features.planner or {})}
    if mode == "agg":
        config.setdefault("mode", "agg")
    for key in ("ttft", "itl"):  # as Dynamo: the SLA the user stated (not the defaults) is the planner's,
        value = getattr(req.spec.sla, key)  # unless its own config says otherwise
        if value is not None and key not in config and f"{key}_ms" not in config:
            config[f"{key}_ms"] = float(value)
    if profile_results_dir is not None:
        config["profile_results_dir"] = profile_results_dir
    return config


def planner_service(req: Request, backend: str, image: str, configmap: str | None, mode: str) -> dict[str, Any]:
    """The SLA planner, pointed at the profile-data ConfigMap's mount. The same path also goes in its
    env, which `dynamo.deploy run` maps to the local copy of the ConfigMap as it maps every mount path
    (a path inside the `--config` JSON it leaves alone)."""
    config = planner_config(req, backend, PROFILE_MOUNT if configmap else None, mode)
    container = _container(image, "dynamo.planner", ["--config", json.dumps(config, sort_keys=True)])
    svc: dict[str, Any] = {"componentType": "planner", "replicas": 1, "extraPodSpec": {"mainContainer": container}}
    if configmap:
        _mount_profile(svc["extraPodSpec"], configmap)
        svc["envs"] = [{"name": PROFILE_DIR_ENV, "value": PROFILE_MOUNT}]
    return svc

"""Control endpoint of a running `python -m dynamo.deploy run` (127.0.0.1 only):

    GET  /status                       -> {"graph", "services": {name: replicas},
                                           "components": {name: {componentType, subComponentType}}, "replicas": [...],
                                           "autoscalers": [{autoscaler, service, metrics, decided, ...}]}
    POST /scale {"service": S, "replicas": N}  -> 200 with the new status; 404 unknown service;
                                          400 a bad body or N outside 0..MAX_REPLICAS (64)
    POST /apply {"manifest": YAML, "deadline_s": S?} -> 200 {"applied": what each service gets, "status"};
                                          409 a change that cannot be made in place (names the field);
                                          400 a manifest that does not validate or build (`local_rollout.py`);
                                          503 the run is stopping
    GET  /prometheus/targets           -> Prometheus HTTP service discovery (`http_sd_configs`): every
                                          running replica's metrics port, labelled as Dynamo's PodMonitors
                                          label pods (namespace, dynamo_namespace, service, pod, ...)

`python -m dynamo.deploy scale URL SERVICE=N [SERVICE=N ...]` is its client (several assignments: one
request each, in order); the planner's local connector can call the same route. `python -m dynamo.deploy
apply URL FILE` posts a manifest and waits for its rollout (GET /status's "rollout"), and for the restart a new
`spec.restart.id` starts (its "restart": `local_restart.py`).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Awaitable, Callable

import msgspec

from dynamo.deploy.local_rollout import ApplyRequest, Halted, Refused
from dynamo.deploy.supervisor import MAX_REPLICAS, Supervisor
from dynamo.runtime.asgi import EmbeddedHttpServer, read_body, send_json


class ScaleRequest(msgspec.Struct, forbid_unknown_fields=True):
    service: str
    replicas: int


class ControlServer:
    def __init__(self, supervisor: Supervisor, graph_name: str, port: int = 0) -> None:
        self.supervisor = supervisor
        self.graph_name = graph_name
        self.http = EmbeddedHttpServer(self.app, "127.0.0.1", port)
        self.models: Any = None  # DynamoModel TOTAL/READY rows (dynamo_model.AdapterReconciler.status)
        self.autoscalers: Any = None  # the file's HPAs / ScaledObjects evaluated here: their last evaluation
        self.applier: Callable[[ApplyRequest], Awaitable[dict[str, Any]]] | None = None  # run's: plans, diff, roll
        self.rollouts: Callable[[], dict[str, Any]] | None = None  # local_rollout.Applier.status

    def snapshot(self) -> dict[str, Any]:
        snap = {"graph": self.graph_name,
                "services": {name: plan.replicas for name, plan in self.supervisor.plans.items()},
                # what a planner needs to find its pools, as it reads them from a DGD on Kubernetes
                # (and a GlobalPlanner its GPU budget: GPUs per replica)
                "components": {name: {"componentType": plan.svc.componentType,
                                      "subComponentType": plan.svc.subComponentType, "gpus": plan.gpus}
                               for name, plan in self.supervisor.plans.items()},
                "replicas": self.supervisor.status()}
        if self.models is not None:
            snap["models"] = self.models()
        if self.autoscalers:
            snap["autoscalers"] = [scaler.status() for scaler in self.autoscalers]
        if self.rollouts is not None:
            snap["rollout"] = self.rollouts()
        return snap

    def scrape_targets(self) -> list[dict[str, Any]]:
        """What a Prometheus scrapes of this graph: a frontend's HTTP port, a worker's system port (the
        ports change as replicas come and go, so a static config cannot keep up)."""
        out = []
        for rep in self.supervisor.replicas.values():
            port = rep.launch.http_port or rep.launch.system_port
            if port is None or rep.state == "exited":
                continue
            plan = self.supervisor.plans.get(rep.service)
            env = rep.launch.env or {}
            out.append({"targets": [f"127.0.0.1:{port}"], "labels": {
                "namespace": env.get("POD_NAMESPACE", "default"), "dynamo_namespace": env.get("DYN_NAMESPACE", ""),
                "dynamo_graph_deployment": self.graph_name, "service": rep.service,
                "pod": f"{self.graph_name}-{rep.service}-{rep.index}".lower(),
                "component_type": (plan.svc.componentType if plan else None) or "worker"}})
        return out

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        route = (scope["method"], scope["path"])
        if route == ("GET", "/status"):
            await send_json(send, 200, self.snapshot())
        elif route == ("GET", "/prometheus/targets"):
            await send_json(send, 200, self.scrape_targets())
        elif route == ("POST", "/scale"):
            try:
                req = msgspec.json.decode(await read_body(receive, 65536), type=ScaleRequest)
                self.supervisor.scale(req.service, req.replicas)
            except KeyError as exc:
                await send_json(send, 404, {"error": str(exc.args[0])})
                return
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                await send_json(send, 400, {"error": str(exc)})
                return
            await send_json(send, 200, self.snapshot())
        elif route == ("POST", "/apply"):
            await self._apply(receive, send)
        else:
            await send_json(send, 404, {"error": f"no route {scope['method']} {scope['path']}"})

    async def _apply(self, receive, send) -> None:
        if self.applier is None:
            await send_json(send, 404, {"error": "this run takes no apply"})
            return
        try:
            req = msgspec.json.decode(await read_body(receive, 4 << 20), type=ApplyRequest)
            applied = await self.applier(req)
        except Refused as exc:
            await send_json(send, 409, {"error": str(exc), "field": exc.field})
            return
        except Halted as exc:
            await send_json(send, 503, {"error": str(exc)})
            return
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, LookupError) as exc:
            await send_json(send, 400, {"error": str(exc.args[0]) if exc.args else str(exc)})
            return
        await send_json(send, 200, {"applied": applied, "status": self.snapshot()})

    async def start(self) -> int:
        await self.http.start()
        return self.http.port

    async def stop(self) -> None:
        await self.http.stop()


def parse_assignments(assignments: list[str]) -> list[tuple[str, int]]:
    """`SERVICE=REPLICAS` each, in order; ValueError names the first bad one (then nothing is sent)."""
    out: list[tuple[str, int]] = []
    for text in assignments:
        service, sep, value = text.partition("=")
        if not sep or not service or not value.strip().isdigit():
            raise ValueError(f"{text!r}: expected SERVICE=REPLICAS")
        if int(value) > MAX_REPLICAS:  # the endpoint refuses it too; say so without a round trip
            raise ValueError(f"{service}: replicas {int(value)} is more than run's limit of {MAX_REPLICAS} per "
                             "service")
        if service in (s for s, _ in out):
            raise ValueError(f"{service} is assigned twice")
        out.append((service, int(value)))
    return out


def _post_scale(url: str, service: str, replicas: int) -> dict[str, Any]:
    body = json.dumps({"service": service, "replicas": replicas}).encode()
    req = urllib.request.Request(url + "/scale", data=body, method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def scale_main(url: str, assignments: list[str] | str | None) -> int:
    """`dynamo.deploy scale URL [SERVICE=N ...]`: no assignment prints the status; several are checked
    first, then applied one after another (the endpoint takes one service per request), each said on
    stderr; stdout is the services' replicas after the last. A failure stops there and says which were
    applied and which not (exit 1)."""
    url = url.rstrip("/")
    wanted = [assignments] if isinstance(assignments, str) else list(assignments or [])
    try:
        todo = parse_assignments(wanted)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done: list[str] = []
    try:
        if not todo:
            with urllib.request.urlopen(url + "/status", timeout=10) as resp:
                print(json.dumps(json.load(resp), indent=2))
            return 0
        for service, replicas in todo:
            status = _post_scale(url, service, replicas)
            done.append(f"{service}={replicas}")
            if len(todo) > 1:
                print(f"scaled {service} to {replicas}", file=sys.stderr)
        print(json.dumps(status["services"]))
        return 0
    except OSError as exc:  # urllib's HTTPError too
        return _request_failed(url, exc, _progress(todo, done))


def _request_failed(url: str, exc: OSError, progress: str = "") -> int:
    """Say on stderr why a request to the control endpoint failed (exit 1): the endpoint's own refusal (its
    HTTP status and message), or that it could not be reached at all; `progress` is appended to either."""
    if isinstance(exc, urllib.error.HTTPError):
        print(f"error {exc.code}: {_error_text(exc.read())}{progress}", file=sys.stderr)
    else:
        print(f"cannot reach {url}: {exc}{progress}", file=sys.stderr)
    return 1


def _progress(todo: list[tuple[str, int]], done: list[str]) -> str:
    """Where a run of several assignments stopped (nothing for a single one)."""
    if len(todo) < 2:
        return ""
    rest = [f"{s}={n}" for s, n in todo[len(done):]]
    return f" ({rest[0]} failed; applied: {', '.join(done) or 'none'}; not attempted: {', '.join(rest[1:]) or 'none'})"


def _error_text(body: bytes) -> str:
    """The endpoint's {"error": ...} as its message alone; any other body as it came."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")


def apply_main(url: str, path: str, wait: bool = True, timeout: float = 900.0, deadline: float | None = None) -> int:
    """`dynamo.deploy apply URL FILE`: post FILE, print what each service gets (stderr), then, unless
    `wait` is off, wait until each service this apply touched (replaced, added or scaled) is complete (exit 0),
    one of its rollouts stalled (exit 1) or `timeout` passes (exit 1), and until the restart it started (a new
    `spec.restart.id`) is Completed (exit 0), Failed (exit 1) or taken over by a later apply; stdout is the final
    rollout status.
    Another service's state (an unrelated crash loop, an earlier stall) is not this apply's to judge."""
    url = url.rstrip("/")
    try:
        with open(path, encoding="utf-8") as fh:
            body = {"manifest": fh.read(), "source": path,
                    **({"deadline_s": deadline} if deadline is not None else {})}
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    req = urllib.request.Request(url + "/apply", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.load(resp)
        applied = answer["applied"]
        print(json.dumps(applied), file=sys.stderr)
        end = time.monotonic() + timeout
        rollout = answer["status"].get("rollout", {})
        while wait and _waiting(applied, rollout) and time.monotonic() < end:
            time.sleep(1.0)
            with urllib.request.urlopen(url + "/status", timeout=10) as resp:
                rollout = json.load(resp).get("rollout", {})
    except OSError as exc:  # urllib's HTTPError too
        return _request_failed(url, exc)
    print(json.dumps(rollout, indent=2))
    code, why = _verdict(applied, rollout, wait, timeout)
    if why:
        print(why, file=sys.stderr)
    return code


def _verdict(applied: dict[str, Any], rollout: dict[str, Any], wait: bool, timeout: float) -> tuple[int, str]:
    """apply's exit code and what it says on stderr, from the final rollout status: 1 when one of its own
    rollouts stalled, its restart failed, or (waiting) it is not over; a restart superseded by the workers'
    rolling update is said, not a failure (that update is among the rollouts waited for)."""
    stalled = [n for n in _touched(applied) if _state(applied, rollout, n) == "stalled"]
    if stalled:
        return 1, f"rollout stalled: {', '.join(stalled)}"
    phase = _restart_phase(applied, rollout)
    if phase == "Failed":
        return 1, rollout["restart"].get("message", "restart failed")
    if wait and _waiting(applied, rollout):
        return 1, f"rollout not complete after {timeout:g}s"
    if phase == "Superseded":
        return 0, f"restart {rollout['restart']['observedID']}: {rollout['restart'].get('message', 'superseded')}"
    return 0, ""


def _touched(applied: dict[str, Any]) -> list[str]:
    return sorted({*applied.get("replaced", {}), *applied.get("added", []), *applied.get("scaled", {})})


def _state(applied: dict[str, Any], rollout: dict[str, Any], service: str) -> str:
    """The service's state as far as this apply goes: `done` once a later apply took it over or removed it; a
    stall counts only when it is this apply's rollout's."""
    info = rollout.get("services", {}).get(service)
    if info is None or info["generation"] > applied["generation"]:
        return "done"
    if info["state"] == "stalled" and info["generation"] != applied["generation"]:
        return "scaling"  # an earlier apply's stall: this apply's count is not reached yet
    return info["state"]


def _restart_phase(applied: dict[str, Any], rollout: dict[str, Any]) -> str | None:
    """The phase of the restart this apply started (`spec.restart`: a sequence waits for each service in turn);
    None when it started none, or a later apply took the restart over."""
    now = rollout.get("restart")
    if "restart" not in applied or now is None or now.get("generation") != applied["generation"]:
        return None
    return now["phase"]


def _waiting(applied: dict[str, Any], rollout: dict[str, Any]) -> bool:
    return (any(_state(applied, rollout, n) not in ("complete", "stalled", "done") for n in _touched(applied))
            or _restart_phase(applied, rollout) == "Restarting")

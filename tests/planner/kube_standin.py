"""A stand-in Kubernetes API server (tests only): the few documented endpoints the
planner's Kubernetes connector calls, on 127.0.0.1, recording every request.

- GET        /apis/nvidia.com/{version}/namespaces/{ns}/dynamographdeployments (a list)
- GET/PATCH  /apis/nvidia.com/{version}/namespaces/{ns}/dynamographdeployments/{name}
  (PATCH accepts RFC 6902 JSON Patch: `test`, `add`, `replace`; a failed `test` is 422)
- PATCH      /apis/nvidia.com/v1alpha1/namespaces/{ns}/dynamographdeploymentscalingadapters/{name}/scale
  (merge patch `{"spec": {"replicas": N}}`; 404 unless the adapter exists)

- GET        /apis/apps/v1/namespaces/{ns}/deployments?labelSelector=k=v, .../deployments/{name}
- PATCH      /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale (merge or strategic merge patch)
  (a graph rendered to plain Deployments, no operator)

Like the operator, a replica change sets the DGD's `Ready` condition to False; the test
decides when it turns True again (`mark_ready`); a Deployment's `status.readyReplicas` moves
only when the test says (`set_ready`). Not a Kubernetes: no auth, no watch.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

DGD = re.compile(r"^/apis/nvidia\.com/(v1alpha1|v1beta1)/namespaces/([^/]+)/dynamographdeployments(?:/([^/]+))?$")
DEPLOYMENTS = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?(/scale)?$")
SCALE = re.compile(r"^/apis/nvidia\.com/v1alpha1/namespaces/([^/]+)/dynamographdeploymentscalingadapters/([^/]+)/scale$")


def status(kind: str, code: int, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code,
            "reason": kind}


class KubeStandIn:
    def __init__(self, dgd: dict | None, versions: tuple[str, ...] = ("v1beta1",), adapters: tuple[str, ...] = (),
                 deployments: list[dict] = (), others: list[dict] = ()) -> None:
        self.dgd = dgd if dgd is not None else {"metadata": {"name": ""}, "spec": {"services": {}}}
        # The first is `dgd`; none at all (no operator: the DGD kind is not served) without one.
        self.dgds = {d["metadata"]["name"]: d for d in ((self.dgd,) if dgd is not None else ()) + tuple(others)}
        self.deployments = {d["metadata"]["name"]: copy.deepcopy(d) for d in deployments}
        for d in self.deployments.values():
            d["spec"].setdefault("replicas", 1)  # the API server's default (a rendered planner-scaled Deployment)
            d["status"] = {"replicas": d["spec"]["replicas"], "readyReplicas": d["spec"]["replicas"]}
        self.versions = versions
        self.adapters = set(adapters)  # names of existing DGDSAs
        self.requests: list[tuple[str, str, str, object]] = []  # (method, path, content-type, body)
        self.lock = threading.Lock()
        self.mark_ready(True)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                outer._handle(self, "GET")

            def do_PATCH(self):
                outer._handle(self, "PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def mark_ready(self, ready: bool, name: str | None = None) -> None:
        for dgd in ([self.dgds[name]] if name else self.dgds.values()):
            dgd.setdefault("status", {})["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]

    def set_ready(self, name: str, ready: int) -> None:
        self.deployments[name]["status"]["readyReplicas"] = ready

    def components(self, name: str | None = None) -> dict[str, dict]:
        spec = (self.dgds[name] if name else self.dgd)["spec"]
        return {c["name"]: c for c in spec["components"]} if "components" in spec else spec["services"]

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        length = int(req.headers.get("content-length") or 0)
        body = json.loads(req.rfile.read(length)) if length else None
        ctype = req.headers.get("content-type", "")
        with self.lock:
            self.requests.append((method, req.path, ctype, body))
            path, _, query = req.path.partition("?")
            code, reply = (self._deployments(method, path, query, body) if DEPLOYMENTS.match(path)
                           else self._route(method, path, ctype, body))
        data = json.dumps(reply).encode()
        req.send_response(code)
        req.send_header("content-type", "application/json")
        req.send_header("content-length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _route(self, method: str, path: str, ctype: str, body) -> tuple[int, dict]:
        m = DGD.match(path)
        if m and not self.dgds:
            return 404, status("NotFound", 404, "the server could not find the requested resource")
        if m and m.group(1) in self.versions and m.group(3) is None and method == "GET":
            return 200, {"apiVersion": f"nvidia.com/{m.group(1)}", "kind": "DynamoGraphDeploymentList",
                         "metadata": {}, "items": list(self.dgds.values())}
        if m and m.group(1) in self.versions and m.group(3) in self.dgds:
            if method == "GET":
                return 200, self.dgds[m.group(3)]
            if "json-patch" not in ctype:
                return 415, status("UnsupportedMediaType", 415, ctype)
            return self._json_patch(self.dgds[m.group(3)], body)
        m = SCALE.match(path)
        if m and method == "PATCH":
            if m.group(2) not in self.adapters:
                return 404, status("NotFound", 404, f"dynamographdeploymentscalingadapters {m.group(2)!r} not found")
            if "merge-patch" not in ctype:
                return 415, status("UnsupportedMediaType", 415, ctype)
            graph, target = next((g, n) for g in self.dgds for n in self.components(g) if f"{g}-{n.lower()}" == m.group(2))
            self.components(graph)[target]["replicas"] = body["spec"]["replicas"]
            self.mark_ready(False, graph)
            return 200, {"kind": "Scale", "spec": {"replicas": body["spec"]["replicas"]}}
        return 404, status("NotFound", 404, path)

    def _deployments(self, method: str, path: str, query: str, body) -> tuple[int, dict]:
        _, name, scale = DEPLOYMENTS.match(path).groups()
        if name is None:  # a list, by label selector
            terms = [p.split("=", 1) for p in parse_qs(query).get("labelSelector", [""])[0].split(",") if p]
            items = [d for d in self.deployments.values()  # `k=v`, or `k` (the label exists)
                     if all((t[0] in d["metadata"].get("labels", {})) if len(t) == 1
                            else d["metadata"].get("labels", {}).get(t[0]) == t[1] for t in terms)]
            return 200, {"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": items}
        dep = self.deployments.get(name)
        if dep is None:
            return 404, status("NotFound", 404, f"deployments.apps {name!r} not found")
        if method == "PATCH" and scale:
            dep["spec"]["replicas"] = body["spec"]["replicas"]
            dep["status"]["replicas"] = body["spec"]["replicas"]
            return 200, {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": name},
                         "spec": {"replicas": dep["spec"]["replicas"]}, "status": {"replicas": dep["spec"]["replicas"]}}
        return 200, dep

    def _json_patch(self, dgd: dict, ops: list[dict]) -> tuple[int, dict]:
        doc = copy.deepcopy(dgd)
        for op in ops:
            parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/")]
            parent = doc
            for p in parts[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
            last = int(parts[-1]) if isinstance(parent, list) else parts[-1]
            if op["op"] == "test":
                if parent[last] != op["value"]:
                    return 422, status("Invalid", 422, f"test failed at {op['path']}")
            elif op["op"] in ("add", "replace"):
                parent[last] = op["value"]
            else:
                return 422, status("Invalid", 422, f"unsupported op {op['op']}")
        dgd.clear()
        dgd.update(doc)
        self.mark_ready(False, dgd["metadata"]["name"])
        return 200, dgd


def kubeconfig(path, server: str) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": server}}],
        "users": [{"name": "planner", "user": {"token": "test-token"}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "planner", "namespace": "team"}}],
    }))
    return str(path)

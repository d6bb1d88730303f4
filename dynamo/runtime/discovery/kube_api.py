"""The Kubernetes API calls discovery makes, over its REST interface: list, watch, server-side
apply and delete of namespaced objects. In a pod it reaches the API server the in-cluster way
(`KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's token and CA); `DYN_KUBE_API_SERVER`
names another server instead (e.g. `kubectl proxy`'s, which needs no token).

Every call has a deadline; a watch ends when the server closes it (`timeoutSeconds`) and its
caller lists again from the last resource version it saw.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from dynamo.runtime.settings import RuntimeSettings

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CALL_TIMEOUT_S = 10.0
WATCH_SECONDS = 240  # the server closes a watch after this; the caller resumes from its last version
GROUP_PATHS = {"endpointslices": "/apis/discovery.k8s.io/v1", "dynamoworkermetadatas": "/apis/nvidia.com/v1alpha1"}


class KubeApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API {status}: {message}")
        self.status = status


class Gone(KubeApiError):
    """410: the resource version a watch resumed from is too old; list again."""


class KubeApi:
    def __init__(self, server: str, namespace: str, token_file: Path | None = None, ca_file: Path | None = None):
        self.server = server.rstrip("/")
        self.namespace = namespace
        self.token_file = token_file if token_file is not None and token_file.is_file() else None
        ssl_context: ssl.SSLContext | bool = True
        if ca_file is not None and ca_file.is_file():
            ssl_context = ssl.create_default_context(cafile=str(ca_file))
        self._connector = aiohttp.TCPConnector(ssl=ssl_context)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> KubeApi:
        """The API server of this pod (or `DYN_KUBE_API_SERVER`), in the pod's namespace."""
        namespace = settings.pod_namespace or _read(SERVICE_ACCOUNT / "namespace") or "default"
        if settings.kube_api_server:
            return cls(settings.kube_api_server, namespace, SERVICE_ACCOUNT / "token")
        if not settings.kubernetes_service_host:
            raise RuntimeError("discovery backend 'kubernetes' needs the in-cluster API server "
                               "(KUBERNETES_SERVICE_HOST) or DYN_KUBE_API_SERVER")
        host = settings.kubernetes_service_host
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{settings.kubernetes_service_port}", namespace, SERVICE_ACCOUNT / "token",
                   SERVICE_ACCOUNT / "ca.crt")

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token_file is not None:  # re-read: bound service-account tokens rotate
            headers["Authorization"] = "Bearer " + self.token_file.read_text().strip()
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def path(self, resource: str, name: str | None = None) -> str:
        base = f"{self.server}{GROUP_PATHS[resource]}/namespaces/{self.namespace}/{resource}"
        return f"{base}/{name}" if name else base

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=self._connector)
        return self._session

    async def list(self, resource: str, label_selector: str | None = None) -> tuple[list[dict], str]:
        """(items, the list's resourceVersion)."""
        params = {"labelSelector": label_selector} if label_selector else {}
        body = await self._call("GET", self.path(resource), params=params)
        return body.get("items") or [], str(body.get("metadata", {}).get("resourceVersion", ""))

    async def watch(self, resource: str, resource_version: str,
                    label_selector: str | None = None) -> AsyncIterator[tuple[str, dict]]:
        """(ADDED | MODIFIED | DELETED | BOOKMARK, object) until the server ends the watch; Gone
        when `resource_version` is too old."""
        params = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(WATCH_SECONDS)}
        if label_selector:
            params["labelSelector"] = label_selector
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CALL_TIMEOUT_S, sock_read=WATCH_SECONDS + 30)
        async with self.session.get(self.path(resource), params=params, headers=self._headers(),
                                    timeout=timeout) as resp:
            await _raise_for(resp)
            pending = b""  # split by hand: an object (many model cards) may outgrow aiohttp's line limit
            async for chunk in resp.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _event(json.loads(line))

    async def apply(self, resource: str, name: str, body: dict[str, Any], field_manager: str) -> dict:
        """Server-side apply (create or update) with `field_manager`, forcing ownership of its fields."""
        return await self._call("PATCH", self.path(resource, name), data=json.dumps(body),
                                params={"fieldManager": field_manager, "force": "true"},
                                content_type="application/apply-patch+yaml")

    async def delete(self, resource: str, name: str) -> None:
        """Delete; an object already gone is not an error."""
        try:
            await self._call("DELETE", self.path(resource, name))
        except KubeApiError as exc:
            if exc.status != 404:
                raise

    async def _call(self, method: str, url: str, *, params: dict | None = None, data: str | None = None,
                    content_type: str | None = None) -> dict:
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        try:
            async with self.session.request(method, url, params=params, data=data, timeout=timeout,
                                            headers=self._headers(content_type)) as resp:
                await _raise_for(resp)
                return await resp.json(content_type=None)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ConnectionError(f"Kubernetes API at {self.server}: {exc or 'timed out'}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        else:
            await self._connector.close()


def _event(event: dict) -> tuple[str, dict]:
    kind, obj = event.get("type"), event.get("object") or {}
    if kind == "ERROR":
        raise (Gone if obj.get("code") == 410 else KubeApiError)(obj.get("code", 500), obj.get("message", ""))
    return kind, obj


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    text = await resp.text()
    try:
        message = json.loads(text).get("message", text)
    except ValueError:
        message = text
    raise (Gone if resp.status == 410 else KubeApiError)(resp.status, message[:300])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None

"""DYN_DISCOVERY_BACKEND=kubernetes, which Dynamo's operator injects into every pod by default:
a real frontend and a real mocker worker given it (and the operator's etcd in ETCD_ENDPOINTS)
register in that etcd and serve, through the official `openai` client."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.fixtures.procs import Cluster
from tests.fixtures.servers import etcd_server  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


def etcd_keys(url: str, prefix: str) -> list[str]:
    """Keys under `prefix`, read through etcd's own JSON gateway (not through our store)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = {"key": base64.b64encode(prefix.encode()).decode(), "range_end": base64.b64encode(end.encode()).decode(),
            "keys_only": True}
    resp = httpx.post(f"{url}/v3/kv/range", content=json.dumps(body), timeout=10)
    resp.raise_for_status()
    return [base64.b64decode(kv["key"]).decode() for kv in resp.json().get("kvs", [])]


def test_frontend_and_worker_serve_with_the_operators_kubernetes_backend(tiny_model, tmp_path, etcd_server):
    c = Cluster(tmp_path, tiny_model, "kubernetes", {"ETCD_ENDPOINTS": etcd_server})
    try:
        c.mocker("--speedup-ratio", "100")
        frontend = c.frontend()
        c.wait_workers("tiny", 1)
        reply = c.openai_client().completions.create(model="tiny", prompt="hello", max_tokens=4)
        assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "length"
        assert any(key.startswith("v1/instances/dynamo/") for key in etcd_keys(etcd_server, "v1/instances/"))
        assert etcd_keys(etcd_server, "v1/mdc/")  # the model card, in the same etcd
        assert "served through etcd" in frontend.log()
    finally:
        c.stop()

"""The `/v1/responses` route (frontend/responses.py) before its generation: a refusal of what the request
names in the store (an unknown `item_reference` or `previous_response_id`) is made inside the request's count
in the request metrics (`app.generate`'s `prepare`), as its other refusals are."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.responses import ResponsesApi
from dynamo.frontend.responses_store import ResponseStore


class CountingApp:
    """An app as the route uses it, whose `generate` counts each request and the refusals its `prepare` makes."""

    def __init__(self, body: dict) -> None:
        self.body = json.dumps(body).encode()
        self.admission = SimpleNamespace(refuse_if_draining=lambda: None)
        self.counted: list[str] = []

    async def request_body(self, scope, receive) -> bytes:
        return self.body

    async def generate(self, rreq, endpoint, body_size, receive, send, run_cls, prepare=None, **kw) -> None:
        try:
            prepare()
        except ApiError as exc:
            self.counted.append(f"{endpoint}: {exc.status} {exc.param}")
            raise
        self.counted.append(f"{endpoint}: prepared")


@pytest.mark.parametrize("body, refusal", [
    ({"input": [{"type": "item_reference", "id": "msg_unknown"}]}, "responses: 400 input[0].id"),
    ({"input": "hi", "previous_response_id": "resp_unknown"}, "responses: 400 previous_response_id")])
def test_a_reference_to_nothing_stored_is_refused_inside_the_requests_count(body, refusal):
    app = CountingApp({"model": "m", **body})
    with pytest.raises(ApiError) as err:
        asyncio.run(ResponsesApi(ResponseStore(1 << 20)).create(app, {"headers": []}, None, None))
    assert err.value.status == 400 and app.counted == [refusal]

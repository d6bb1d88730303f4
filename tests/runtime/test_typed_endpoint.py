"""Typed endpoints: the request plane decodes a `request_type` payload once, and a payload
that does not decode ends the stream with `bad_request` before any handler code runs
(real server and client on loopback)."""

from __future__ import annotations

import pytest

from dynamo.llm.protocol import PreprocessedRequest, request_encoder
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from dynamo.runtime.rp_server import RequestPlaneServer


@pytest.fixture
async def plane():
    server = RequestPlaneServer("127.0.0.1", 0)
    seen: list = []

    async def handler(request, ctx):
        seen.append(request)
        yield {"n": len(request.token_ids)}

    server.add_handler("generate", handler, request_type=PreprocessedRequest)
    await server.start()
    client = RequestPlaneClient()
    yield server, client, seen
    await client.close()
    await server.close()


async def test_handler_gets_a_decoded_request(plane):
    server, client, seen = plane
    payload = request_encoder.encode(PreprocessedRequest(request_id="r1", model="m", token_ids=[1, 2, 3]))
    stream = await client.open_stream(server.address, "generate", payload)
    items = [item async for item in stream]
    assert len(items) == 1
    assert isinstance(seen[0], PreprocessedRequest) and seen[0].token_ids == [1, 2, 3]


@pytest.mark.parametrize("payload", [b"\xc1garbage", request_encoder.encode({"request_id": "r", "model": "m"}),
                                     request_encoder.encode({"request_id": "r", "model": "m", "token_ids": "x"})])
async def test_malformed_payload_is_bad_request_and_never_reaches_the_handler(plane, payload):
    server, client, seen = plane
    stream = await client.open_stream(server.address, "generate", payload)
    with pytest.raises(StreamError) as err:
        [item async for item in stream]
    assert err.value.code == "bad_request" and "malformed request" in str(err.value)
    assert seen == []

"""A request pinned (nvext.prefill_worker_id, x-prefill-instance-id) to a worker that is not one of the model's
prefill workers: the client's error, a 400 naming the hint, as a bad decode pin is; not "prefill pool busy" (a
503 under --enforce-disagg that no retry can cure, or, without it, the pin silently dropped)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from dynamo.frontend.disagg import DisaggMetrics, DisaggPolicy, PrefillOrchestrator
from dynamo.frontend.errors import ApiError
from dynamo.frontend.request_handle import RequestHandle
from dynamo.llm.model_card import WorkerType
from dynamo.llm.protocol import RoutingHints
from dynamo.router.policy import RoundRobinPolicy, WorkerInfo
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.frontend.helpers_cards import card, model, request

DECODE, PREFILL = EndpointId("dynamo", "backend", "generate"), EndpointId("dynamo", "prefill", "generate")


@pytest.mark.parametrize("enforce", [False, True])
@pytest.mark.parametrize("pin", [12345, 1])  # no worker at all; the decode worker
async def test_a_pin_to_no_prefill_worker_is_the_clients_400(enforce, pin):
    client = RequestPlaneClient()
    try:
        prefill = PrefillOrchestrator(client, RoundRobinPolicy(), DisaggPolicy(enforce=enforce),
                                      DisaggMetrics(CollectorRegistry(), "t"))
        entry = model(WorkerInfo(1, DECODE, card("old"), "127.0.0.1:1"),
                      WorkerInfo(3, PREFILL, card("old", WorkerType.PREFILL), "127.0.0.1:3"))
        pinned = msgspec.structs.replace(request(), routing=RoutingHints(prefill_worker_id=pin))
        with pytest.raises(ApiError) as refused:
            await asyncio.wait_for(prefill.prefill(entry, pinned, RequestHandle(), "old"), 30)
        assert (refused.value.status, refused.value.code, refused.value.param) == \
            (400, "worker_not_found", "nvext.prefill_worker_id")
    finally:
        await client.close()

"""The response `nvext` (`nvext.extra_fields`): which names are asked for, who served a request
(the prefill worker is the decode worker unless a prefill worker prefilled it), and its timing."""

from __future__ import annotations

import pytest

from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.errors import ApiError
from dynamo.frontend.response_ext import requested, timing, worker_ids


def test_the_fields_asked_for_and_bad_requests():
    assert requested(None) == requested({}) == frozenset()
    assert requested({"extra_fields": ["timing", "worker_id", "routed_experts"]}) == {"timing", "worker_id"}
    for bad in ("timing", [1], {"timing": True}):
        with pytest.raises(ApiError) as err:
            requested({"extra_fields": bad})
        assert err.value.status == 400 and err.value.param == "nvext.extra_fields"


def test_worker_ids_aggregated_and_disaggregated():
    handle = RequestHandle()
    assert worker_ids(handle) is None  # never routed
    handle.worker_id, handle.dp_rank = 7, 1
    assert worker_ids(handle) == {"prefill_worker_id": 7, "prefill_dp_rank": 1, "decode_worker_id": 7,
                                  "decode_dp_rank": 1}
    handle.prefill_worker_id, handle.prefill_dp_rank = 3, 0
    assert worker_ids(handle) == {"prefill_worker_id": 3, "prefill_dp_rank": 0, "decode_worker_id": 7,
                                  "decode_dp_rank": 1}


def test_timing_in_milliseconds_with_the_routers_hit_rate():
    out = timing(1700000000.1234, 0.0425, 0.5, hit_blocks=3, isl=50, block_size=16)
    assert out == {"request_received_ms": 1700000000123, "ttft_ms": 42.5, "total_time_ms": 500.0,
                   "kv_hit_rate": 0.75}  # 3 of ceil(50 / 16) = 4 blocks
    assert "kv_hit_rate" not in timing(1.0, None, 0.1, hit_blocks=None, isl=50, block_size=16)
    assert "ttft_ms" not in timing(1.0, None, 0.1, hit_blocks=0, isl=50, block_size=16)


def test_timing_splits_the_ttft_where_the_first_worker_stream_opened():
    out = timing(1.0, 0.0425, 0.5, hit_blocks=None, isl=50, block_size=16, prefill_start=0.0125)
    assert (out["prefill_wait_time_ms"], out["prefill_time_ms"], out["ttft_ms"]) == (12.5, 30.0, 42.5)
    cancelled = timing(1.0, None, 0.5, hit_blocks=None, isl=50, block_size=16, prefill_start=0.01)
    assert cancelled["prefill_wait_time_ms"] == 10.0 and "prefill_time_ms" not in cancelled

import pytest

from dynamo.mocker.timing import TimingModel, decode_ms, prefill_ms, transfer_ms


def test_prefill_polynomial():
    assert prefill_ms(0) == 0.0
    assert prefill_ms(1000) == pytest.approx(4.209989e-07 * 1e6 + 1.518344e-02 * 1000 + 16.50142)
    assert prefill_ms(8192) > prefill_ms(4096) > prefill_ms(1)


def test_decode_polynomial_and_floor():
    assert decode_ms(0.0) == pytest.approx(5.74)
    assert decode_ms(0.5) == pytest.approx(-25.74 * 0.25 + 54.01 * 0.5 + 5.74)
    assert decode_ms(1.0) == pytest.approx(-25.74 + 54.01 + 5.74)
    assert decode_ms(-3) == pytest.approx(5.74)  # clamped usage
    # The floor: a model whose polynomial would go below 1 ms.
    assert decode_ms(2.0) == decode_ms(1.0)


def test_transfer_time():
    # 1000 tokens x 131072 B at 64 GB/s
    assert transfer_ms(1000, 131072, 64.0) == pytest.approx(1000 * 131072 / 64e9 * 1e3)
    assert transfer_ms(0, 131072, 64.0) == 0.0


def test_speedup_scaling():
    base = TimingModel(speedup_ratio=1.0, kv_bytes_per_token=131072)
    fast = TimingModel(speedup_ratio=10.0, kv_bytes_per_token=131072)
    off = TimingModel(speedup_ratio=0.0, kv_bytes_per_token=131072)
    assert base.step_seconds(100, True, 0.2) == pytest.approx((prefill_ms(100) + decode_ms(0.2)) / 1e3)
    assert fast.step_seconds(100, True, 0.2) == pytest.approx(base.step_seconds(100, True, 0.2) / 10)
    assert base.step_seconds(0, False, 0.5) == 0.0
    assert base.step_seconds(0, True, 0.0) == pytest.approx(decode_ms(0.0) / 1e3)
    assert off.step_seconds(5000, True, 0.9) == 0.0 and off.transfer_seconds(5000) == 0.0
    assert fast.transfer_seconds(1000) == pytest.approx(transfer_ms(1000, 131072, 64.0) / 1e4)

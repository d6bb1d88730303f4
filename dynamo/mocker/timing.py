"""Simulated step durations: NVIDIA Dynamo mocker's polynomial performance model.

All public functions return seconds of wall-clock sleep, already divided by the
speedup ratio (a ratio of 0 means "no delays at all"). With `--planner-profile-data` the
polynomials give way to the profiler's measurements (Dynamo's interpolated mode): prefill
time is the profiled TTFT at this step's new tokens, decode time the profiled ITL at the
step's active KV tokens and mean context length.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamo.llm.perf_data import Profile

# Prefill: milliseconds for t new (uncached) tokens batched in one step.
PREFILL_COEFFS = (4.209989e-07, 1.518344e-02, 16.50142)
# Decode: milliseconds for one step, p = active KV tokens / total KV tokens.
DECODE_COEFFS = (-25.74, 54.01, 5.74)
DECODE_FLOOR_MS = 1.0


def prefill_ms(tokens: int) -> float:
    """Unscaled prefill time in ms for `tokens` batched new tokens (0 tokens cost 0)."""
    if tokens <= 0:
        return 0.0
    a, b, c = PREFILL_COEFFS
    return a * tokens * tokens + b * tokens + c


def decode_ms(kv_usage: float) -> float:
    """Unscaled decode step time in ms at KV usage fraction `kv_usage` (floor 1 ms)."""
    p = min(max(kv_usage, 0.0), 1.0)
    a, b, c = DECODE_COEFFS
    return max(a * p * p + b * p + c, DECODE_FLOOR_MS)


def transfer_ms(isl: int, kv_bytes_per_token: int, bandwidth_gb_s: float) -> float:
    """Unscaled disaggregated KV transfer time in ms for `isl` prompt tokens."""
    if isl <= 0 or bandwidth_gb_s <= 0:
        return 0.0
    return isl * kv_bytes_per_token / (bandwidth_gb_s * 1e9) * 1e3


@dataclass(frozen=True)
class TimingModel:
    speedup_ratio: float = 1.0
    decode_speedup_ratio: float = 1.0  # decode steps only (speculative decoding)
    kv_bytes_per_token: int = 0
    kv_transfer_bandwidth: float = 64.0
    profile: Profile | None = None
    host_h2d_bandwidth: float = 0.0  # GB/s copying host-tier blocks back; 0 = unlimited

    @property
    def enabled(self) -> bool:
        return self.speedup_ratio > 0

    def _scale(self, ms: float) -> float:
        return ms / 1e3 / self.speedup_ratio if self.speedup_ratio > 0 else 0.0

    def step_seconds(self, prefill_tokens: int, decoding: bool, kv_usage: float, active_tokens: int = 0,
                     running: int = 1) -> float:
        """Decode time (if any sequence decodes this step) plus prefill time of this step's new tokens."""
        if self.speedup_ratio <= 0:
            return 0.0
        if self.profile is not None:
            return self._scale(self._profiled_ms(prefill_tokens, decoding, active_tokens, running))
        ms = prefill_ms(prefill_tokens)
        if decoding:
            ms += decode_ms(kv_usage) / self.decode_speedup_ratio
        return self._scale(ms)

    def _profiled_ms(self, prefill_tokens: int, decoding: bool, active_tokens: int, running: int) -> float:
        prefill, decode = self.profile.prefill, self.profile.decode  # type: ignore[union-attr]
        ms = 0.0
        if prefill_tokens > 0:
            ms += prefill.ttft(prefill_tokens) if prefill is not None else prefill_ms(prefill_tokens)
        if decoding:
            if decode is not None:
                ms += decode.itl_at_tokens(active_tokens, active_tokens / max(running, 1)) / self.decode_speedup_ratio
            else:
                ms += DECODE_COEFFS[2] / self.decode_speedup_ratio
        return ms

    def onboard_seconds(self, tokens: int) -> float:
        """Copying `tokens` of KV back from the host tier (host-to-device bandwidth)."""
        return self._scale(transfer_ms(tokens, self.kv_bytes_per_token, self.host_h2d_bandwidth))

    def transfer_seconds(self, isl: int) -> float:
        return self._scale(transfer_ms(isl, self.kv_bytes_per_token, self.kv_transfer_bandwidth))

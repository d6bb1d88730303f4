"""Per-pool performance model fitted online to forward-pass metrics (target `sla`):
iteration wall time as a linear function of the work scheduled (Dynamo 1.6.1's model).

- prefill: `wall_time ~ sum_prefill_tokens`
- decode:  `wall_time ~ [num_decode_requests, sum_decode_kv_tokens]`
- agg:     `wall_time ~ [sum_prefill_tokens, num_decode_requests, sum_decode_kv_tokens]`

Samples are kept in equal-width buckets over the engine's limits (16 for one bounded
dimension, 4x4 for two) so a long stretch of similar steps cannot crowd out the rest;
when full, the oldest sample of the fullest bucket goes. Ordinary least squares with
an intercept (numpy); the model is usable after `min_samples` samples.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from dynamo.llm.forward_pass import ForwardPassMetrics


class PerfModel:
    def __init__(self, bounds: list[float], dims: int | None = None, max_samples: int = 64,
                 bucket_size: int = 16, min_samples: int = 5) -> None:
        self.bounds = [max(float(b), 1.0) for b in bounds]
        self.dims = dims or len(bounds)
        self.per_dim = max(1, round(bucket_size ** (1.0 / len(bounds))))
        self.max_samples = max_samples
        self.min_samples = min_samples
        self.buckets: dict[tuple[int, ...], deque[tuple[tuple[float, ...], float]]] = {}
        self._coef: np.ndarray | None = None
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    @property
    def ready(self) -> bool:
        return self._count >= self.min_samples

    def _bucket(self, x: tuple[float, ...]) -> tuple[int, ...]:
        idx = []
        for value, bound in zip(self._bucket_coords(x), self.bounds):
            idx.append(min(self.per_dim - 1, max(0, int(value / bound * self.per_dim))))
        return tuple(idx)

    def _bucket_coords(self, x: tuple[float, ...]) -> tuple[float, ...]:
        # The bucketed coordinates are the first and last features (tokens; KV tokens).
        return (x[0],) if len(self.bounds) == 1 else (x[0], x[-1])

    def add(self, x: tuple[float, ...], wall_s: float) -> None:
        if len(x) != self.dims or wall_s <= 0 or not math.isfinite(wall_s):
            return
        if self._count >= self.max_samples:
            fullest = max(self.buckets.values(), key=len)
            fullest.popleft()
            self._count -= 1
        self.buckets.setdefault(self._bucket(x), deque()).append((tuple(float(v) for v in x), float(wall_s)))
        self._count += 1
        self._coef = None

    def _fit(self) -> np.ndarray:
        rows = [s for bucket in self.buckets.values() for s in bucket]
        xs = np.array([[1.0, *x] for x, _ in rows])
        ys = np.array([y for _, y in rows])
        coef, *_ = np.linalg.lstsq(xs, ys, rcond=None)
        return coef

    def predict(self, x: tuple[float, ...]) -> float:
        """Predicted iteration wall time in seconds (never negative)."""
        if not self.ready:
            raise RuntimeError("perf model has too few samples")
        if self._coef is None:
            self._coef = self._fit()
        return max(0.0, float(self._coef[0] + np.dot(self._coef[1:], np.asarray(x, dtype=float))))


def prefill_model(max_batched_tokens: int, **kw) -> PerfModel:
    return PerfModel([max_batched_tokens], **kw)


def decode_model(max_num_seqs: int, max_kv_tokens: int, **kw) -> PerfModel:
    return PerfModel([max_num_seqs, max_kv_tokens], **kw)


def agg_model(max_batched_tokens: int, max_kv_tokens: int, **kw) -> PerfModel:
    return PerfModel([max_batched_tokens, max_kv_tokens], dims=3, **kw)


def sample(role: str, fpm: ForwardPassMetrics) -> tuple[float, ...] | None:
    """The feature vector of one FPM for `role`'s model, or None when it says nothing about it."""
    s = fpm.scheduled_requests
    if fpm.wall_time <= 0:
        return None
    if role == "prefill":
        return (s.sum_prefill_tokens,) if s.num_prefill_requests and not s.num_decode_requests else None
    if role == "decode":
        return (s.num_decode_requests, s.sum_decode_kv_tokens) if s.num_decode_requests and \
            not s.num_prefill_requests else None
    if s.num_prefill_requests or s.num_decode_requests:
        return (s.sum_prefill_tokens, s.num_decode_requests, s.sum_decode_kv_tokens)
    return None


def chunked_prefill_ms(model: PerfModel, tokens: float, chunk: int) -> float:
    """Time to prefill `tokens` split into `chunk`-token iterations, in ms."""
    if tokens <= 0:
        return 0.0
    full, rest = divmod(tokens, chunk)
    ms = full * model.predict(prefill_x(model, chunk)) * 1000.0
    return ms + (model.predict(prefill_x(model, rest)) * 1000.0 if rest > 0 else 0.0)


def prefill_x(model: PerfModel, tokens: float) -> tuple[float, ...]:
    return (tokens,) if model.dims == 1 else (tokens, 0.0, 0.0)


def decode_x(model: PerfModel, num_decode: float, kv_tokens: float) -> tuple[float, ...]:
    return (num_decode, kv_tokens) if model.dims == 2 else (0.0, num_decode, kv_tokens)

"""The `ttft` cost model: each candidate worker is scored by the time to first token the
request would see there, predicted from what dominates TTFT under load:

    ttft ~ c0 + c_prefill * (queued prefill tokens + this request's uncached tokens)
              + c_decode * KV usage after booking + c_batch * running requests
    cost = ttft + c_prefill * this request's uncached tokens  (the wait it adds for later requests)
                + the wait for KV blocks when the booking does not fit the worker (kv_capacity)

The prefill term is the work ahead of the request on that worker plus its own new prefill
after cache hits; the decode terms are the step time every scheduled prefill shares with
the running batch. Coefficients start from NVIDIA Dynamo's mocker performance model (itself
fitted to H100 measurements) and are then fitted online, per pool, to the TTFTs the router
observes (booking -> first token), by exponentially weighted ridge regression towards the
priors: the same defaults adapt to the mocker, to vLLM on a GPU and to vLLM on a CPU, with
no per-workload tuning. `--router-cost-model dynamo` keeps Dynamo's classic cost instead.
"""

from __future__ import annotations

from typing import Mapping, Sequence

# Feature scales keep the normal equations well conditioned. Running requests count one by one: in
# units of 16 the prior's pseudo-observations outweighed any data at the 1-3 requests per worker of a
# small deployment, so the fit blamed the waits they cause on prefill, and affinity piled requests on
# one worker (real vLLM, cheap prefill: two thirds of the requests on one of two workers).
TOKENS_PER_UNIT = 1000.0
REQUESTS_PER_UNIT = 1.0
# Priors in seconds per unit: 0.0152 ms/token prefill, ~28 ms decode step from empty to full
# cache (the mocker's polynomials), 5 ms per 16 running requests (batch size slows real engines'
# steps; it also keeps equal choices load-balanced).
PRIOR = (0.02, 0.0152, 0.028, 0.005 / 16)
PRIOR_WEIGHT = 4.0  # pseudo-observations holding the fit to the prior until data says otherwise
DECAY = 0.995  # per observation: about the last 200 requests count
REFIT_EVERY = 8
# A fitted slope stays above this share of its prior: more work is never faster. The prefill slope
# (what a cache hit saves) never fits below its prior: on a loaded host, observed TTFTs are noisy
# enough that the fit can talk itself into "cache hits barely matter" and send a request away from
# the worker holding its prefix; faster-than-prior prefill is rare (the prior is H100-fitted).
MIN_SLOPE_FRACTION = (1.0, 0.1, 0.1)
MIN_STEP_SECS = 0.001  # a decode step is never predicted faster than this


def features(prefill_tokens: int, usage: float, requests: int) -> tuple[float, float, float, float]:
    return (1.0, prefill_tokens / TOKENS_PER_UNIT, usage, requests / REQUESTS_PER_UNIT)


class TtftModel:
    def __init__(self, prior: Sequence[float] = PRIOR) -> None:
        self.prior = tuple(prior)
        n = len(self.prior)
        self._xx = [[0.0] * n for _ in range(n)]
        self._xy = [0.0] * n
        self.coef = list(self.prior)
        self.observations = 0

    def predict(self, x: Sequence[float]) -> float:
        return sum(c * v for c, v in zip(self.coef, x))

    def costs(self, candidates: Mapping, x_of, own_tokens) -> dict:
        """Cost per candidate key: the request's predicted TTFT there plus the prefill time its own
        new tokens add to the queue of every later request on that worker (so that, of two
        equally fast choices, the one that computes less wins: a shared prefix is computed once).
        `x_of(key)` gives the features, `own_tokens(key)` the request's own new prefill tokens."""
        coef = self.coef
        per_token = coef[1] / TOKENS_PER_UNIT
        return {key: sum(c * v for c, v in zip(coef, x_of(key))) + per_token * own_tokens(key)
                for key in candidates}

    def decode_step(self, x: Sequence[float]) -> float:
        """Predicted decode step at the worker's KV usage and batch in `x`: a fully cached request's
        TTFT there is the rest of the running step (half a step on average) and then its own."""
        coef = self.coef
        return max((coef[0] + coef[2] * min(x[2], 1.0) + coef[3] * x[3]) / 1.5, MIN_STEP_SECS)

    def observe(self, x: Sequence[float], ttft: float) -> None:
        if not 0 <= ttft < 600:
            return
        n = len(x)
        xx, xy = self._xx, self._xy
        for i in range(n):
            row = xx[i]
            for j in range(n):
                row[j] = row[j] * DECAY + x[i] * x[j]
            xy[i] = xy[i] * DECAY + x[i] * ttft
        self.observations += 1
        if self.observations % REFIT_EVERY == 0:
            self._refit()

    def _refit(self) -> None:
        n = len(self.prior)
        a = [[self._xx[i][j] + (PRIOR_WEIGHT if i == j else 0.0) for j in range(n)] for i in range(n)]
        b = [self._xy[i] + PRIOR_WEIGHT * self.prior[i] for i in range(n)]
        solved = _solve(a, b)
        if solved is not None:
            slopes = zip(solved[1:], self.prior[1:], MIN_SLOPE_FRACTION)
            self.coef = [solved[0]] + [max(c, floor * p) for c, p, floor in slopes]


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting (n = 4); None when singular."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            if f:
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (m[r][n] - sum(m[r][c] * out[c] for c in range(r + 1, n))) / m[r][r]
    return out

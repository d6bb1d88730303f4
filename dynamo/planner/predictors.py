"""Load predictors for the `sla` throughput loop: a registry of one-step-ahead
forecasters of the next interval's request count (Dynamo 1.6.1 `core/load/predictors.py`).

- `constant`: the last observation.
- `arima`: ARIMA(p, d, 0) fitted by conditional least squares for p in 0..3, d in 0..1,
  chosen by AIC (numpy only; Dynamo uses pmdarima's auto_arima, which also searches MA
  terms). When the best fit collapses to (0, d, 0) and the series is not flat, it refits
  on log1p(x) as Dynamo's fallback does; `load_predictor_log1p` forces the log scale.
- `kalman`: a local-linear-trend Kalman filter (level + trend) with Dynamo's
  `kalman_q_level`, `kalman_q_trend`, `kalman_r`; the last value until `kalman_min_points`.
- `prophet` is not provided (a heavy dependency); it is served by `arima`, and the
  planner logs that it did so.

Every predictor skips leading idle zeros (no traffic yet is not a trend), and never
predicts below zero.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod

import numpy as np

log = logging.getLogger(__name__)


class Predictor(ABC):
    def __init__(self, window: int = 100) -> None:
        self.window = window
        self.history: list[float] = []

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            return
        if not self.history and value == 0:
            return  # leading idle zeros
        self.history.append(float(value))
        del self.history[: -self.window]

    def predict(self) -> float:
        if not self.history:
            return 0.0
        return max(0.0, self._predict())

    @abstractmethod
    def _predict(self) -> float: ...


class ConstantPredictor(Predictor):
    def _predict(self) -> float:
        return self.history[-1]


def _fit_ar(x: np.ndarray, p: int) -> tuple[float, float] | None:
    """(AIC, one-step forecast) of AR(p) with intercept on x, or None if too short."""
    n = len(x) - p
    if n < p + 3:
        return None
    cols = [np.ones(n)] + [x[p - k - 1 : len(x) - k - 1] for k in range(p)]
    a = np.column_stack(cols)
    y = x[p:]
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    rss = float(np.sum((y - a @ coef) ** 2))
    aic = n * math.log(max(rss / n, 1e-12)) + 2 * (p + 1)
    forecast = float(coef[0] + sum(coef[k + 1] * x[-k - 1] for k in range(p)))
    return aic, forecast


class ArimaPredictor(Predictor):
    def __init__(self, window: int = 100, log1p: bool = False) -> None:
        super().__init__(window)
        self.log1p = log1p
        self.order: tuple[int, int, int] | None = None

    def _predict(self) -> float:
        x = np.asarray(self.history, dtype=float)
        if len(x) < 4:
            return float(x[-1])
        if self.log1p:
            return float(np.expm1(self._search(np.log1p(x))))
        value = self._search(x)
        if self.order is not None and self.order[0] == 0 and np.ptp(x) > 0:
            return float(np.expm1(self._search(np.log1p(x))))  # collapsed fit: retry on the log scale
        return value

    def _search(self, x: np.ndarray) -> float:
        best: tuple[float, float, tuple[int, int, int]] | None = None
        for d in (0, 1):
            series = np.diff(x) if d else x
            for p in range(4):
                fit = _fit_ar(series, p)
                if fit is None:
                    continue
                aic, forecast = fit
                if best is None or aic < best[0] - 1e-9:
                    best = (aic, forecast + (x[-1] if d else 0.0), (p, d, 0))
        if best is None:
            self.order = None
            return float(x[-1])
        self.order = best[2]
        return best[1]


class KalmanPredictor(Predictor):
    def __init__(self, window: int = 100, q_level: float = 1.0, q_trend: float = 0.1, r: float = 10.0,
                 min_points: int = 5) -> None:
        super().__init__(window)
        self.q = np.diag([q_level, q_trend])
        self.r = r
        self.min_points = min_points

    def _predict(self) -> float:
        if len(self.history) < self.min_points:
            return self.history[-1]
        f = np.array([[1.0, 1.0], [0.0, 1.0]])
        h = np.array([1.0, 0.0])
        state = np.array([self.history[0], 0.0])
        cov = np.eye(2) * 1e3
        for z in self.history[1:]:
            state = f @ state
            cov = f @ cov @ f.T + self.q
            gain = cov @ h / (h @ cov @ h + self.r)
            state = state + gain * (z - h @ state)
            cov = (np.eye(2) - np.outer(gain, h)) @ cov
        return float((f @ state)[0])


def make_predictor(name: str, cfg=None) -> Predictor:
    """Registry by Dynamo's `load_predictor` names."""
    log1p = bool(cfg and cfg.load_predictor_log1p)
    if name == "constant":
        return ConstantPredictor()
    if name in ("arima", "prophet"):
        if name == "prophet":
            log.warning("load_predictor 'prophet' is not available here: using 'arima' instead")
        return ArimaPredictor(window=cfg.prophet_window_size if (cfg and name == "prophet") else 100, log1p=log1p)
    if name == "kalman":
        if cfg is None:
            return KalmanPredictor()
        return KalmanPredictor(q_level=cfg.kalman_q_level, q_trend=cfg.kalman_q_trend, r=cfg.kalman_r,
                               min_points=cfg.kalman_min_points)
    raise ValueError(f"unknown load predictor {name!r}")

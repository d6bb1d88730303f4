"""The Kubernetes HorizontalPodAutoscaler's replica arithmetic (autoscaling/v2), for the autoscalers
`dynamo.deploy run` evaluates itself (`local_autoscalers.py`): a metric's usage ratio with the 10%
tolerance, min/max, and `spec.behavior`'s stabilization windows and scaling policies, as the HPA
controller applies them. A KEDA ScaledObject scales through an HPA built from it, so this is its
arithmetic too (KEDA's own activation and cooldown are in `local_autoscalers.py`).

Pure logic over an injected clock: every function takes `now` in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TOLERANCE = 0.1  # the controller's --horizontal-pod-autoscaler-tolerance default


@dataclass(frozen=True)
class Policy:
    """One `HPAScalingPolicy`: at most `value` pods, or `value` percent, per `period` seconds."""

    kind: str  # "Pods" or "Percent"
    value: int
    period: float


@dataclass(frozen=True)
class Rules:
    """One direction's `HPAScalingRules`."""

    window: float  # stabilizationWindowSeconds
    policies: tuple[Policy, ...]
    select: str = "Max"  # Max (the largest change a policy allows), Min, Disabled


DEFAULT_UP = Rules(0.0, (Policy("Percent", 100, 15.0), Policy("Pods", 4, 15.0)))
DEFAULT_DOWN = Rules(300.0, (Policy("Percent", 100, 15.0),))


def parse_rules(spec: dict[str, Any] | None, default: Rules) -> Rules:
    """`behavior.scaleUp` / `scaleDown` as written; what it leaves out is Kubernetes' default."""
    if not spec:
        return default
    policies = tuple(Policy(str(p["type"]), int(p["value"]), float(p["periodSeconds"]))
                     for p in spec.get("policies") or ())
    window = spec.get("stabilizationWindowSeconds")
    return Rules(default.window if window is None else float(window), policies or default.policies,
                 str(spec.get("selectPolicy") or "Max"))


def parse_behavior(spec: dict[str, Any] | None) -> tuple[Rules, Rules]:
    spec = spec or {}
    return parse_rules(spec.get("scaleUp"), DEFAULT_UP), parse_rules(spec.get("scaleDown"), DEFAULT_DOWN)


def proposal(current: int, ratio: float) -> int:
    """Replicas for a metric at `ratio` times its target (the usage ratio); within the tolerance, `current`."""
    if current <= 0 or abs(ratio - 1.0) <= TOLERANCE:
        return current
    return math.ceil(ratio * current)


@dataclass
class Governor:
    """One scale target's HPA state: past recommendations (stabilization) and past scale events
    (policies), turning a proposal into the replicas to set now."""

    up: Rules = DEFAULT_UP
    down: Rules = DEFAULT_DOWN
    low: int = 1
    high: int = 1
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (when, replica change)

    def decide(self, now: float, current: int, proposed: int) -> int:
        if not self.low <= current <= self.high:  # out of range: straight to the bound, as the controller does
            desired = min(max(current, self.low), self.high)
        else:
            desired = self._stabilized(now, current, proposed)
            if desired > current:
                desired = current if self.up.select == "Disabled" else min(desired, self._up_limit(now, current))
            elif desired < current:
                desired = current if self.down.select == "Disabled" else max(desired, self._down_limit(now, current))
        if desired != current:
            self.events.append((now, desired - current))
        return desired

    def _stabilized(self, now: float, current: int, desired: int) -> int:
        """The HPA's windows: scale up only to the lowest, down only to the highest recommendation in them."""
        horizon = max(self.up.window, self.down.window, *(p.period for p in self.up.policies + self.down.policies))
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - horizon]
        self.events = [(t, d) for t, d in self.events if t > now - horizon]
        up = min([r for t, r in self.recommendations if t > now - self.up.window] + [desired])
        down = max([r for t, r in self.recommendations if t > now - self.down.window] + [desired])
        self.recommendations.append((now, desired))
        return min(max(current, up), down)

    def _period_start(self, now: float, current: int, period: float) -> int:
        return current - sum(d for t, d in self.events if t > now - period)

    def _up_limit(self, now: float, current: int) -> int:
        limits = []
        for p in self.up.policies:
            start = self._period_start(now, current, p.period)
            limits.append(start + p.value if p.kind == "Pods" else math.ceil(start * (1 + p.value / 100)))
        limit = min(limits) if self.up.select == "Min" else max(limits)
        return max(min(limit, self.high), current)

    def _down_limit(self, now: float, current: int) -> int:
        limits = []
        for p in self.down.policies:
            start = self._period_start(now, current, p.period)
            limits.append(start - p.value if p.kind == "Pods" else math.floor(start * (1 - p.value / 100)))
        limit = max(limits) if self.down.select == "Min" else min(limits)
        return min(max(limit, self.low), current)

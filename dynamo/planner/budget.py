"""GPU budget: fit the pools' replica targets into `[min_gpu_budget, max_gpu_budget]`.

The max budget is a hard limit (Dynamo issue #12428: a rebalance exceeded it): when
even the per-pool minimums do not fit, pools are cut below their minimum and the
reason says so. Within the budget, replicas are shared out in proportion to what each
pool asked for, then any leftover GPUs go back to pools that asked for more.
"""

from __future__ import annotations

import math

from dynamo.planner.config import PlannerConfig


def gpus(targets: dict[str, int], cfg: PlannerConfig) -> int:
    return sum(n * cfg.gpus_for(role) for role, n in targets.items())


def fit_budget(targets: dict[str, int], cfg: PlannerConfig) -> tuple[dict[str, int], str | None]:
    wanted = dict(targets)
    total = gpus(wanted, cfg)
    cap = cfg.max_gpu_budget
    if cap >= 0 and total > cap:
        scale = cap / total
        out = {r: max(cfg.min_for(r), math.floor(n * scale)) for r, n in wanted.items()}
        while gpus(out, cfg) > cap and any(out.values()):
            biggest = max(out, key=lambda r: (out[r] * cfg.gpus_for(r), r))
            out[biggest] -= 1
        for role in sorted(wanted, key=lambda r: out[r] / max(wanted[r], 1)):  # fill the leftover
            while out[role] < wanted[role] and gpus(out, cfg) + cfg.gpus_for(role) <= cap:
                out[role] += 1
        under = [r for r in out if out[r] < cfg.min_for(r)]
        note = f"GPU budget {cap}: {_show(wanted)} needs {total} GPUs, fitted to {_show(out)}"
        if under:
            note += f" (below the minimum for {', '.join(under)}: the budget wins)"
        return out, note
    floor_budget = cfg.min_gpu_budget
    if floor_budget > 0 and total < floor_budget:
        out = dict(wanted)
        roles = sorted(out)
        grew = True
        while gpus(out, cfg) < floor_budget and grew:
            grew = False
            for role in roles:
                fits = cap < 0 or gpus(out, cfg) + cfg.gpus_for(role) <= cap
                if gpus(out, cfg) < floor_budget and out[role] < cfg.max_for(role) and fits:
                    out[role] += 1
                    grew = True
        return out, f"min GPU budget {floor_budget}: {_show(wanted)} raised to {_show(out)}"
    return wanted, None


def _show(targets: dict[str, int]) -> str:
    return " ".join(f"{role}={n}" for role, n in sorted(targets.items()))

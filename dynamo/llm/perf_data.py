"""The performance-data contract: what the profiler measures and the planner and mocker read.

NVIDIA Dynamo's layout, kept file for file so profiles move between the two projects:

- `{dir}/selected_prefill_interpolation/raw_data.npz`: `prefill_isl`, `prefill_ttft` (ms),
  `prefill_thpt_per_gpu` (tokens/s/GPU);
- `{dir}/selected_decode_interpolation/raw_data.npz`: `x_kv_usage` (fraction of KV capacity),
  `y_context_length` (isl + osl/2), `z_itl` (ms), `z_thpt_per_gpu`, `max_kv_tokens` (1 element);
- the ConfigMap form: `{dir}/prefill_raw_data.json`, `{dir}/decode_raw_data.json` (same keys, lists);
- the mocker's flat grid `.npz`: `prefill_isl`, `prefill_ttft_ms`, `decode_active_kv_tokens`,
  `decode_context_length`, `decode_itl[kv, context]`.

`load_profile(path)` accepts any of them. The interpolators are piecewise linear: prefill on
ISL; decode on KV usage within each measured context length, then across context lengths.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo.llm.npz import load_npz, save_npz

PREFILL_DIR = "selected_prefill_interpolation"
DECODE_DIR = "selected_decode_interpolation"
RAW_FILE = "raw_data.npz"
PREFILL_JSON = "prefill_raw_data.json"
DECODE_JSON = "decode_raw_data.json"
PREFILL_KEYS = ("prefill_isl", "prefill_ttft", "prefill_thpt_per_gpu")
DECODE_KEYS = ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens")
GRID_KEYS = ("prefill_isl", "prefill_ttft_ms", "decode_active_kv_tokens", "decode_context_length", "decode_itl")
MIN_MS = 1e-3  # extrapolation never predicts a zero or negative latency


def interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Linear interpolation on sorted `xs`, linear extrapolation past either end."""
    if len(xs) == 1:
        return ys[0]
    i = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _sorted_pairs(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    pairs = sorted(zip(xs, ys))
    return [p[0] for p in pairs], [p[1] for p in pairs]


@dataclass(frozen=True)
class PrefillProfile:
    """Prefill at concurrency 1: TTFT and throughput per GPU against ISL."""

    isl: list[float]
    ttft_ms: list[float]
    thpt_per_gpu: list[float]

    def __post_init__(self) -> None:
        if not self.isl or not (len(self.isl) == len(self.ttft_ms) == len(self.thpt_per_gpu)):
            raise ValueError("prefill profile: prefill_isl/prefill_ttft/prefill_thpt_per_gpu must be non-empty "
                             "and the same length")

    def ttft(self, isl: float) -> float:
        xs, ys = _sorted_pairs(self.isl, self.ttft_ms)
        return max(interp(isl, xs, ys), MIN_MS)

    def throughput_per_gpu(self, isl: float) -> float:
        xs, ys = _sorted_pairs(self.isl, self.thpt_per_gpu)
        return max(interp(isl, xs, ys), 0.0)

    def to_arrays(self) -> dict[str, Any]:
        return {"prefill_isl": self.isl, "prefill_ttft": self.ttft_ms, "prefill_thpt_per_gpu": self.thpt_per_gpu}


@dataclass(frozen=True)
class DecodeProfile:
    """Decode: ITL and throughput per GPU against KV usage and context length."""

    kv_usage: list[float]
    context_length: list[float]
    itl_ms: list[float]
    thpt_per_gpu: list[float]
    max_kv_tokens: int

    def __post_init__(self) -> None:
        n = len(self.kv_usage)
        if not n or not (n == len(self.context_length) == len(self.itl_ms) == len(self.thpt_per_gpu)):
            raise ValueError("decode profile: x_kv_usage/y_context_length/z_itl/z_thpt_per_gpu must be non-empty "
                             "and the same length")
        if self.max_kv_tokens <= 0:
            raise ValueError(f"decode profile: max_kv_tokens must be > 0, got {self.max_kv_tokens}")

    def _groups(self, values: list[float]) -> list[tuple[float, list[float], list[float]]]:
        by_ctx: dict[float, list[tuple[float, float]]] = {}
        for x, y, z in zip(self.kv_usage, self.context_length, values):
            by_ctx.setdefault(y, []).append((x, z))
        return [(y, *_sorted_pairs([p[0] for p in pts], [p[1] for p in pts])) for y, pts in sorted(by_ctx.items())]

    def _surface(self, values: list[float], kv_usage: float, context_length: float) -> float:
        groups = self._groups(values)
        per_ctx = [(y, interp(kv_usage, xs, zs)) for y, xs, zs in groups]
        ys = [g[0] for g in per_ctx]
        # Context length is clamped to the measured range: extrapolating attention cost is guesswork.
        return interp(min(max(context_length, ys[0]), ys[-1]), ys, [g[1] for g in per_ctx])

    def itl(self, kv_usage: float, context_length: float) -> float:
        return max(self._surface(self.itl_ms, kv_usage, context_length), MIN_MS)

    def throughput_per_gpu(self, kv_usage: float, context_length: float) -> float:
        return max(self._surface(self.thpt_per_gpu, kv_usage, context_length), 0.0)

    def itl_at_tokens(self, active_kv_tokens: float, context_length: float) -> float:
        return self.itl(active_kv_tokens / self.max_kv_tokens, context_length)

    def best_throughput_per_gpu(self, itl_target_ms: float, context_length: float,
                                steps: int = 200) -> tuple[float, float, float]:
        """(throughput/GPU, KV usage, ITL) of the busiest load whose ITL meets the target, within
        the measured load range; the lightest load's figures when even that misses it."""
        # Stay within the measured concurrency: the least any context length was driven to.
        groups = self._groups(self.itl_ms)
        top_conc = min(max(xs) * self.max_kv_tokens / y for y, xs, _ in groups)
        top = top_conc * max(context_length, 1.0) / self.max_kv_tokens
        best = None
        for i in range(steps + 1):
            x = top * i / steps
            itl = self.itl(x, context_length)
            if itl <= itl_target_ms:
                best = (self.throughput_per_gpu(x, context_length), x, itl)
        if best is None:
            x = min(self.kv_usage)
            return self.throughput_per_gpu(x, context_length), x, self.itl(x, context_length)
        return best

    def to_arrays(self) -> dict[str, Any]:
        return {"x_kv_usage": self.kv_usage, "y_context_length": self.context_length, "z_itl": self.itl_ms,
                "z_thpt_per_gpu": self.thpt_per_gpu, "max_kv_tokens": [int(self.max_kv_tokens)]}


@dataclass(frozen=True)
class Profile:
    prefill: PrefillProfile | None = None
    decode: DecodeProfile | None = None


def prefill_from(arrays: dict[str, Any]) -> PrefillProfile:
    missing = [k for k in PREFILL_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"prefill data lacks {', '.join(missing)}")
    return PrefillProfile(*(list(map(float, arrays[k])) for k in PREFILL_KEYS))


def decode_from(arrays: dict[str, Any]) -> DecodeProfile:
    missing = [k for k in DECODE_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"decode data lacks {', '.join(missing)}")
    max_kv = arrays["max_kv_tokens"]
    max_kv = max_kv[0] if isinstance(max_kv, (list, tuple)) else max_kv
    return DecodeProfile(*(list(map(float, arrays[k])) for k in DECODE_KEYS[:4]), max_kv_tokens=int(max_kv))


def profile_from_grid(arrays: dict[str, Any]) -> Profile:
    """The mocker's flat grid (`decode_itl[kv_idx][ctx_idx]`) as scattered profile points."""
    kv = list(map(float, arrays["decode_active_kv_tokens"]))
    ctx = list(map(float, arrays["decode_context_length"]))
    grid = arrays["decode_itl"]
    max_kv = max(kv) or 1.0
    points = [(k / max_kv, c, float(grid[i][j])) for i, k in enumerate(kv) for j, c in enumerate(ctx)]
    # Throughput per GPU of a decode step: tokens in the batch (kv / ctx) per ITL.
    thpt = [(x * max_kv / c if c else 0.0) / (z / 1000.0) for x, c, z in points]
    isl = list(map(float, arrays["prefill_isl"]))
    ttft = list(map(float, arrays["prefill_ttft_ms"]))
    prefill = PrefillProfile(isl, ttft, [i / (t / 1000.0) for i, t in zip(isl, ttft)])
    decode = DecodeProfile([p[0] for p in points], [p[1] for p in points], [p[2] for p in points], thpt, int(max_kv))
    return Profile(prefill, decode)


def _load_file(path: Path) -> Profile:
    arrays: dict[str, Any] = load_npz(path) if path.suffix == ".npz" else json.loads(path.read_text())
    if all(k in arrays for k in GRID_KEYS):
        return profile_from_grid(arrays)
    prefill = prefill_from(arrays) if "prefill_ttft" in arrays else None
    decode = decode_from(arrays) if "z_itl" in arrays else None
    if prefill is None and decode is None:
        raise ValueError(f"{path}: neither prefill nor decode interpolation data")
    return Profile(prefill, decode)


def load_profile(path: str | Path) -> Profile:
    """A profile from a profiler output dir, a ConfigMap mount dir, or one `.npz`/`.json` file.
    Raises FileNotFoundError when nothing there holds interpolation data, ValueError when a file
    is malformed."""
    path = Path(path)
    if path.is_file():
        return _load_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    found: dict[str, Any] = {}
    for kind, sub, js in (("prefill", PREFILL_DIR, PREFILL_JSON), ("decode", DECODE_DIR, DECODE_JSON)):
        for candidate in (path / sub / RAW_FILE, path / js):
            if candidate.is_file():
                found[kind] = getattr(_load_file(candidate), kind)
                break
    if not found:
        raise FileNotFoundError(f"{path}: no {PREFILL_DIR}/{RAW_FILE}, {DECODE_DIR}/{RAW_FILE}, "
                                f"{PREFILL_JSON} or {DECODE_JSON}")
    return Profile(found.get("prefill"), found.get("decode"))


def write_profile(out_dir: str | Path, profile: Profile, configmap_json: bool = True) -> list[Path]:
    """Write `profile` in Dynamo's layout (and the ConfigMap JSON twins); the paths written."""
    out_dir = Path(out_dir)
    written = []
    for part, sub, js in ((profile.prefill, PREFILL_DIR, PREFILL_JSON), (profile.decode, DECODE_DIR, DECODE_JSON)):
        if part is None:
            continue
        arrays = part.to_arrays()
        save_npz(out_dir / sub / RAW_FILE, arrays)
        written.append(out_dir / sub / RAW_FILE)
        if configmap_json:
            (out_dir / js).write_text(json.dumps(arrays))
            written.append(out_dir / js)
    return written

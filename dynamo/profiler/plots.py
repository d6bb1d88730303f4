"""PNG plots of each sweep, readable at a glance: prefill TTFT and throughput/GPU against ISL
with the TTFT target; decode ITL and throughput/GPU against KV load, one line per context length,
with the ITL target. Needs matplotlib (the `profiler` extra)."""

from __future__ import annotations

from pathlib import Path

from dynamo.llm.perf_data import DecodeProfile, PrefillProfile
from dynamo.profiler.rapid import EXTRA_HINT


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(f"plots need matplotlib: {EXTRA_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_prefill(p: PrefillProfile, path: Path, ttft_target: float | None, title: str) -> Path:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = sorted(zip(p.isl, p.ttft_ms, p.thpt_per_gpu))
    a.plot([x[0] for x in pts], [x[1] for x in pts], "o-", label="TTFT")
    if ttft_target:
        a.axhline(ttft_target, color="red", linestyle="--", label=f"SLA TTFT {ttft_target:g} ms")
    a.set(xlabel="input sequence length (tokens)", ylabel="TTFT (ms)", title="Prefill: TTFT vs ISL")
    a.grid(alpha=0.3), a.legend()
    b.plot([x[0] for x in pts], [x[2] for x in pts], "s-", color="green")
    b.set(xlabel="input sequence length (tokens)", ylabel="tokens/s/GPU", title="Prefill: throughput per GPU")
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_decode(d: DecodeProfile, path: Path, itl_target: float | None, title: str) -> Path:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    by_ctx: dict[float, list[tuple[float, float, float]]] = {}
    for x, y, z, t in zip(d.kv_usage, d.context_length, d.itl_ms, d.thpt_per_gpu):
        by_ctx.setdefault(y, []).append((x * 100, z, t))
    for ctx, pts in sorted(by_ctx.items()):
        pts.sort()
        a.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"context {ctx:.0f}")
        b.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=f"context {ctx:.0f}")
    if itl_target:
        a.axhline(itl_target, color="red", linestyle="--", label=f"SLA ITL {itl_target:g} ms")
    a.set(xlabel=f"KV cache load (% of {d.max_kv_tokens} tokens)", ylabel="ITL (ms)", title="Decode: ITL vs load")
    b.set(xlabel=f"KV cache load (% of {d.max_kv_tokens} tokens)", ylabel="tokens/s/GPU",
          title="Decode: throughput per GPU")
    for ax in (a, b):
        ax.grid(alpha=0.3), ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

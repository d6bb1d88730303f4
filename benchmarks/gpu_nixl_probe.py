"""GPU check of the KV-transfer path disaggregated serving relies on: two NIXL agents
(as a prefill and a decode worker would hold) register GPU memory (VRAM) with the UCX
backend, exchange metadata, and WRITE / READ blocks between them; data is verified and
throughput printed. Also DRAM -> VRAM (host-staged, what a CPU fallback looks like).

Needs a CUDA GPU, torch and NIXL (`nixl` + `nixl-cu12`/`nixl-cu13`). Run on a GPU box:

    python benchmarks/gpu_nixl_probe.py [--sizes-mib 1 64 1024]
"""

from __future__ import annotations

import argparse
import time


def wait_done(agent, handle, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = agent.check_xfer_state(handle)
        if state in ("DONE", "ERR"):
            return state
        if time.monotonic() > deadline:
            return "TIMEOUT"


def transfer(op: str, src_agent, dst_agent, src, dst, reps: int) -> tuple[str, float]:
    """`src_agent` initiates `op` between its tensor `src` and `dst_agent`'s tensor `dst`."""
    local = src_agent.get_xfer_descs(src)
    remote = dst_agent.get_xfer_descs(dst)
    remote_name = src_agent.add_remote_agent(dst_agent.get_agent_metadata())
    elapsed = []
    state = "?"
    for _ in range(reps):
        handle = src_agent.initialize_xfer(op, local, remote, remote_name, b"kv")
        start = time.perf_counter()
        state = src_agent.transfer(handle)
        state = wait_done(src_agent, handle) if state != "ERR" else state
        elapsed.append(time.perf_counter() - start)
        src_agent.release_xfer_handle(handle)
        if state != "DONE":
            break
    src_agent.remove_remote_agent(remote_name)
    return state, min(elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    import torch
    from nixl._api import nixl_agent, nixl_agent_config

    assert torch.cuda.is_available(), "needs a CUDA GPU"
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    config = nixl_agent_config(backends=["UCX"])
    prefill, decode = nixl_agent("prefill", config), nixl_agent("decode", config)
    print("NIXL plugins:", prefill.get_plugin_list())
    print("UCX memory types:", prefill.get_backend_mem_types("UCX"))
    rows = []
    for mib in args.sizes_mib:
        n = mib * 1024 * 1024 // 2
        cases = [
            ("VRAM->VRAM WRITE", "WRITE", torch.randn(n, dtype=torch.bfloat16, device="cuda"),
             torch.zeros(n, dtype=torch.bfloat16, device="cuda")),
            ("VRAM->VRAM READ", "READ", torch.zeros(n, dtype=torch.bfloat16, device="cuda"),
             torch.randn(n, dtype=torch.bfloat16, device="cuda")),
            ("DRAM->VRAM WRITE", "WRITE", torch.randn(n, dtype=torch.bfloat16),
             torch.zeros(n, dtype=torch.bfloat16, device="cuda")),
        ]
        for name, op, local, remote in cases:
            regs = [prefill.register_memory(local), decode.register_memory(remote)]
            state, seconds = transfer(op, prefill, decode, local, remote, args.reps)
            torch.cuda.synchronize()
            src, dst = (local, remote) if op == "WRITE" else (remote, local)
            ok = state == "DONE" and torch.equal(src.cpu(), dst.cpu())
            rows.append((name, mib, state, ok, mib / 1024 / seconds if seconds else 0.0))
            prefill.deregister_memory(regs[0])
            decode.deregister_memory(regs[1])
    print("\n| transfer | MiB | state | data equal | GiB/s (best of reps) |\n|---|---|---|---|---|")
    for name, mib, state, ok, gibs in rows:
        print(f"| {name} | {mib} | {state} | {ok} | {gibs:.1f} |")


if __name__ == "__main__":
    main()

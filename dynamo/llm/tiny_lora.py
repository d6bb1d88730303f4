"""Offline, deterministic builder for a tiny LoRA adapter of a tiny Llama model.

Writes the standard PEFT layout a LoRA loader (vLLM's `LoRARequest`, PEFT) reads:
`adapter_config.json` + `adapter_model.safetensors` with random float32 `lora_A`/`lora_B`
weights for the attention projections of every layer. The safetensors file is written
directly (8-byte header length, JSON header, raw little-endian tensors), so building needs
neither torch nor network, and the same seed gives byte-identical files.

    python -m dynamo.llm.tiny_lora --base /tmp/tiny-llama --out /tmp/tiny-lora [--seed 7] [--rank 8]
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
from array import array
from pathlib import Path

TARGETS = ("q_proj", "v_proj")
# B is far from PEFT's zero init on purpose: the adapter must visibly change greedy output.
B_SCALE = 0.5


def _projection_dims(cfg: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of each target projection, from the base model's config.json."""
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    return {"q_proj": (hidden, cfg["num_attention_heads"] * head_dim), "v_proj": (hidden, kv_heads * head_dim)}


def _tensor(rng: random.Random, rows: int, cols: int, scale: float) -> bytes:
    values = array("f", (rng.uniform(-scale, scale) for _ in range(rows * cols)))
    if sys.byteorder != "little":  # pragma: no cover - big endian hosts
        values.byteswap()
    return values.tobytes()


def write_safetensors(path: Path, tensors: dict[str, tuple[tuple[int, ...], bytes]]) -> None:
    """float32 tensors (name -> (shape, raw bytes)) in the safetensors format, names sorted."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name in sorted(tensors):
        shape, data = tensors[name]
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # keep tensor data 8-byte aligned
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def build_tiny_lora(base_dir, out_dir, *, seed: int = 7, rank: int = 8, alpha: int = 16) -> Path:
    """Build (or rebuild identically) the adapter for the model in `base_dir` into `out_dir`."""
    base, out = Path(base_dir), Path(out_dir)
    cfg = json.loads((base / "config.json").read_text())
    dims = _projection_dims(cfg)
    rng = random.Random(seed)
    tensors: dict[str, tuple[tuple[int, ...], bytes]] = {}
    for layer in range(cfg["num_hidden_layers"]):
        for target in TARGETS:
            fan_in, fan_out = dims[target]
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{prefix}.lora_A.weight"] = ((rank, fan_in), _tensor(rng, rank, fan_in, fan_in ** -0.5))
            tensors[f"{prefix}.lora_B.weight"] = ((fan_out, rank), _tensor(rng, fan_out, rank, B_SCALE))
    config = {
        "base_model_name_or_path": str(base.resolve()), "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "lora_alpha": alpha, "lora_dropout": 0.0, "modules_to_save": None,
        "peft_type": "LORA", "r": rank, "target_modules": list(TARGETS), "task_type": "CAUSAL_LM",
        "use_dora": False, "use_rslora": False,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    write_safetensors(out / "adapter_model.safetensors", tensors)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the base model directory (its config.json)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args(argv)
    print(build_tiny_lora(args.base, args.out, seed=args.seed, rank=args.rank))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The tiny LoRA adapter builder: PEFT layout, shapes from the base config, byte-identical rebuilds."""

from __future__ import annotations

import json
import struct

from dynamo.llm.tiny_lora import build_tiny_lora


def read_header(path) -> dict:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert 8 + size + end == len(data)  # the tensors fill the rest of the file exactly
    return header


def test_layout_shapes_and_config(tiny_model, tmp_path):
    out = build_tiny_lora(tiny_model, tmp_path / "a", rank=4)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["target_modules"] == ["q_proj", "v_proj"]
    base = json.loads((tiny_model / "config.json").read_text())
    header = read_header(out / "adapter_model.safetensors")
    layers = base["num_hidden_layers"]
    assert len(header) - 1 == layers * 2 * 2
    q_out = base["num_attention_heads"] * base["head_dim"]
    v_out = base["num_key_value_heads"] * base["head_dim"]
    prefix = "base_model.model.model.layers.0.self_attn"
    assert header[f"{prefix}.q_proj.lora_A.weight"]["shape"] == [4, base["hidden_size"]]
    assert header[f"{prefix}.q_proj.lora_B.weight"]["shape"] == [q_out, 4]
    assert header[f"{prefix}.v_proj.lora_B.weight"]["shape"] == [v_out, 4]
    assert all(v["dtype"] == "F32" for k, v in header.items() if k != "__metadata__")


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model, tmp_path):
    a = build_tiny_lora(tiny_model, tmp_path / "a")
    b = build_tiny_lora(tiny_model, tmp_path / "b")
    c = build_tiny_lora(tiny_model, tmp_path / "c", seed=8)
    weights = "adapter_model.safetensors"
    assert (a / weights).read_bytes() == (b / weights).read_bytes()
    assert (a / weights).read_bytes() != (c / weights).read_bytes()
    assert (a / "adapter_config.json").read_bytes() != b""

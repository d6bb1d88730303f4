import json
import subprocess
import sys

import pytest

from dynamo.llm import tiny_model
from dynamo.llm.tiny_model import STAMP_FILE, build_tiny_model

EXPECTED_FILES = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "config.json", "generation_config.json", STAMP_FILE,
}


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    base = tmp_path_factory.mktemp("determinism")
    return build_tiny_model(base / "a", weights=False), build_tiny_model(base / "b", weights=False)


@pytest.mark.slow  # trains the tokenizer (seconds each, minutes on a loaded box)
def test_builds_are_byte_identical(two_builds):
    a, b = two_builds
    for name in sorted(EXPECTED_FILES):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_file_set_and_stamp(two_builds):
    a, _ = two_builds
    assert {p.name for p in a.iterdir()} == EXPECTED_FILES
    stamp = json.loads((a / STAMP_FILE).read_text())
    assert stamp["preset"] == "tiny" and stamp["seed"] == 1234 and stamp["weights"] is False
    assert len(stamp["corpus_sha256_16"]) == 16
    assert set(stamp["files"]) == EXPECTED_FILES - {STAMP_FILE}


@pytest.mark.slow
def test_configs(two_builds):
    a, _ = two_builds
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (256, 512, 2)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (4, 2, 64)
    assert (cfg["vocab_size"], cfg["max_position_embeddings"]) == (4096, 2048)
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["torch_dtype"]) == (1, 5, "bfloat16")
    assert cfg["tie_word_embeddings"] is False and cfg["rope_theta"] == 10000.0
    assert json.loads((a / "generation_config.json").read_text())["eos_token_id"] == [5, 2]
    tok_cfg = json.loads((a / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (tok_cfg["bos_token"], tok_cfg["eos_token"], tok_cfg["pad_token"]) == ("<s>", "<|im_end|>", "<pad>")
    assert tok_cfg["model_max_length"] == 2048
    assert tok_cfg["chat_template"] == (a / "chat_template.jinja").read_text()
    vocab = json.loads((a / "tokenizer.json").read_text())["model"]["vocab"]
    assert [vocab[t] for t in tiny_model.SPECIAL_TOKENS] == list(range(6))


@pytest.mark.slow
def test_rebuild_is_skipped_and_tampering_detected(two_builds):
    a, _ = two_builds
    before = (a / "tokenizer.json").stat().st_mtime_ns
    build_tiny_model(a, weights=False)
    assert (a / "tokenizer.json").stat().st_mtime_ns == before
    (a / "config.json").write_text("{}")
    build_tiny_model(a, weights=False)
    assert json.loads((a / "config.json").read_text())["model_type"] == "llama"


@pytest.mark.slow
def test_vocab_size_override(tmp_path):
    out = build_tiny_model(tmp_path / "m", weights=False, vocab_size=1024)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 1024
    assert len(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]) == 1024


def test_unknown_preset_rejected(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        build_tiny_model(tmp_path / "m", preset="huge")


def test_explicit_weights_without_torch_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_model, "torch_available", lambda: False)
    with pytest.raises(RuntimeError, match="torch"):
        build_tiny_model(tmp_path / "m", weights=True)


@pytest.mark.e2e  # runs the CLI as a process
def test_cli(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "dynamo.llm.tiny_model", "--out", str(out), "--no-weights"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "corpus_sha256_16" in proc.stdout
    assert (out / "tokenizer.json").is_file()

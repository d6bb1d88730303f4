"""The tiny sequence-classification model builder: deterministic files, the tiny Llama's
tokenizer / template / generation config unchanged, and the config fields vLLM's classify
pooling runner reads (architecture, labels, pad token)."""

import json

import pytest

from dynamo.llm import tiny_classifier
from dynamo.llm.tiny_classifier import DEFAULT_LABELS, build_tiny_classifier, classifier_config
from dynamo.llm.tiny_model import PAD, SPECIAL_TOKENS, STAMP_FILE, build_tiny_model

SHARED_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                "generation_config.json"]


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny-cls")
    return build_tiny_classifier(base / "a"), build_tiny_classifier(base / "b")


@pytest.mark.slow  # trains the tokenizer (seconds, minutes on a loaded box)
def test_builds_are_byte_identical(two_builds):
    a, b = two_builds
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted([*SHARED_FILES, "config.json", STAMP_FILE])
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_shares_the_tiny_llama_tokenizer_files(two_builds, tmp_path):
    llama = build_tiny_model(tmp_path / "llama", weights=False)
    for name in SHARED_FILES:
        assert (two_builds[0] / name).read_bytes() == (llama / name).read_bytes(), name


@pytest.mark.slow
def test_config_and_stamp(two_builds):
    a, _ = two_builds
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"] and cfg["model_type"] == "llama"
    assert cfg["num_labels"] == 3
    assert cfg["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert cfg["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}
    vocab = json.loads((a / "tokenizer.json").read_text())["model"]["vocab"]
    assert cfg["pad_token_id"] == PAD == vocab["<pad>"] and SPECIAL_TOKENS[PAD] == "<pad>"
    stamp = json.loads((a / STAMP_FILE).read_text())
    assert (stamp["kind"], stamp["labels"], stamp["weights"]) == ("seq_cls", list(DEFAULT_LABELS), False)


def test_custom_labels():
    cfg = classifier_config(["spam", " ham "])
    assert cfg["num_labels"] == 2 and cfg["id2label"] == {"0": "spam", "1": "ham"}
    assert cfg["label2id"] == {"spam": 0, "ham": 1}


def test_one_label_is_a_reranker():
    cfg = classifier_config(["LABEL_0"])
    assert cfg["num_labels"] == 1 and cfg["id2label"] == {"0": "LABEL_0"} and "problem_type" not in cfg


@pytest.mark.parametrize("labels", [[], ["a", "a"], ["a", ""]])
def test_bad_labels_rejected(tmp_path, labels):
    with pytest.raises(ValueError, match="labels"):
        build_tiny_classifier(tmp_path / "m", labels=labels)


def test_weights_without_torch_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_classifier, "torch_available", lambda: False)
    with pytest.raises(RuntimeError, match="torch"):
        build_tiny_classifier(tmp_path / "m", weights=True)

"""The tiny BERT cross-encoder builder: deterministic files, a pair template with segment ids (what
/v1/rerank's pairs carry for it), one label; a second build into the same directory is skipped."""

from __future__ import annotations

import json

import pytest

from dynamo.llm.rerank_pairs import PairFormat, pair_tokens
from dynamo.llm.tiny_bert import build_tiny_bert
from dynamo.llm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny-bert")
    return build_tiny_bert(base / "a"), build_tiny_bert(base / "b")


def test_builds_are_identical(built):
    a, b = built
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_one_label_bert_with_a_segmented_pair_template(built):
    cfg = json.loads((built[0] / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"] and cfg["num_labels"] == 1
    assert cfg["type_vocab_size"] == 2
    tok = Tokenizer.from_dir(built[0])
    (pair,) = pair_tokens(tok, [("What is a panda", "a bear")], PairFormat(token_type_ids=True))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert pair.ids[0] == cls and pair.ids.count(sep) == 2 and pair.ids[-1] == sep
    first_sep = pair.ids.index(sep)
    assert pair.type_ids == [0] * (first_sep + 1) + [1] * (len(pair.ids) - first_sep - 1)
    assert tok.decode(pair.ids[1:first_sep]) == "what is a panda"  # lower-cased, as BERT's normalizer does


def test_a_second_build_is_skipped(built):
    before = (built[0] / "tokenizer.json").stat().st_mtime_ns
    build_tiny_bert(built[0])
    assert (built[0] / "tokenizer.json").stat().st_mtime_ns == before

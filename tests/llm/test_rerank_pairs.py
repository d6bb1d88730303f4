"""How the frontend builds a cross-encoder's (query, document) prompts from the card's pair format: a
BERT-style pair template with segment ids, the same without them, one text without a separator; the
card entry read back (and ignored when unreadable); segment ids in the engine's compressed form."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing

from dynamo.llm.rerank_pairs import RERANK_KEY, PairFormat, first_document_token, pair_tokens, truncate_to_tokens
from dynamo.llm.tokenizer import Tokenizer

VOCAB = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "what": 3, "is": 4, "a": 5, "panda": 6, "bear": 7, "?": 8}


@pytest.fixture(scope="module")
def bert_like() -> Tokenizer:
    hf = HFTokenizer(WordLevel(VOCAB, unk_token="[UNK]"))
    hf.pre_tokenizer = Whitespace()
    hf.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                           special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return Tokenizer(hf)


def test_pair_template_with_segments(bert_like):
    (one, two) = pair_tokens(bert_like, [("what is a panda ?", "a bear"), ("what is a panda ?", "panda")],
                              PairFormat(token_type_ids=True))
    assert one.ids == [1, 3, 4, 5, 6, 8, 2, 5, 7, 2] and one.type_ids == [0] * 7 + [1] * 3
    assert two.ids == [1, 3, 4, 5, 6, 8, 2, 6, 2]
    assert first_document_token(one.type_ids) == 7


def test_segments_left_out_unless_the_model_reads_them(bert_like):
    (pair,) = pair_tokens(bert_like, [("what is", "a bear")], PairFormat())
    assert pair.ids == [1, 3, 4, 2, 5, 7, 2] and pair.type_ids is None


def test_without_a_separator_query_and_document_are_one_text(bert_like):
    (pair,) = pair_tokens(bert_like, [("what is ", "a bear")], PairFormat(separator=False, token_type_ids=True))
    assert pair.ids == [1, 3, 4, 5, 7, 2] and pair.type_ids is None


def test_card_entry_round_trip_and_unreadable_entries():
    fmt = PairFormat(separator=False, token_type_ids=True)
    assert PairFormat.from_card({RERANK_KEY: fmt.to_card()}) == fmt
    assert PairFormat.from_card({}) is None
    assert PairFormat.from_card({RERANK_KEY: {"separator": "sometimes"}}) is None
    assert PairFormat.from_card({RERANK_KEY: {"separator": True, "newer_field": 1}}) == PairFormat()


@pytest.mark.parametrize("ids, start", [([0, 0, 1, 1], 2), ([0, 0], 2), ([1, 1], 0), ([], 0)])
def test_segments_compress_to_where_the_document_starts(ids, start):
    assert first_document_token(ids) == start


@pytest.mark.parametrize("ids", [[0, 1, 0], [0, 2], [1, 0]])
def test_segments_of_another_shape_are_refused(ids):
    with pytest.raises(ValueError, match="zeros followed by ones"):
        first_document_token(ids)


@pytest.mark.parametrize("limit, cut", [(0, ""), (1, "what"), (3, "what is a"), (9, "what is a panda ?"),
                                        (100, "what is a panda ?")])
def test_a_text_is_cut_at_a_token_boundary(bert_like, limit, cut):
    assert truncate_to_tokens(bert_like, "what is a panda ?", limit) == cut

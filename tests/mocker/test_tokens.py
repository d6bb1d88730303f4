"""What the mocker samples: never a special id, and never a token that is only part of a
character (its text alone would be nothing until more bytes came), so every generated token
shows as text the step it is generated, as a model writing ordinary text does."""

from __future__ import annotations

from dynamo.llm.detokenizer import IncrementalDetokenizer
from dynamo.llm.tokenizer import Tokenizer
from dynamo.mocker.tokens import TokenSampler, fragment_ids


def test_fragments_are_the_partial_utf8_pieces(tiny_model):
    tok = Tokenizer.from_dir(tiny_model)
    fragments = fragment_ids(tok)
    assert fragments, "a byte-level vocabulary has pieces of multi-byte characters"
    for i in list(fragments)[:20]:
        assert "\ufffd" in tok.backend.decode([i])
    whole = next(i for i in range(tok.vocab_size) if i not in fragments and i not in tok.special_ids)
    assert "\ufffd" not in tok.backend.decode([whole])


def test_a_sampler_without_fragments_yields_text_every_token(tiny_model):
    tok = Tokenizer.from_dir(tiny_model)
    sampler = TokenSampler(tok.vocab_size, tok.special_ids | fragment_ids(tok))
    state, empty = 12345, 0
    for n in range(2000):
        state, token = sampler.next(state)
        assert token not in sampler.forbidden
        det = IncrementalDetokenizer(tok, [10 + n % 50, 20, 30])
        empty += det.add([token]) == ""
    assert empty == 0

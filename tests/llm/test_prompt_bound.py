"""The cheap prompt-length bound is sound (never above the real token count) and is off
for tokenizers whose normalizer can delete characters."""

from __future__ import annotations

import random

import pytest

from dynamo.llm.prompt_bound import PromptBound, _normalizer_slack
from dynamo.llm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(tiny_model) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model)


@pytest.mark.parametrize("spec, slack", [
    (None, 1),
    ({"type": "NFC"}, 4),
    ({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                          {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}, 1),
    ({"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}, 4),
    ({"type": "BertNormalizer", "clean_text": True}, None),
    ({"type": "Strip"}, None),
    ({"type": "Replace", "pattern": {"String": "  "}, "content": " "}, None),
    ({"type": "Precompiled", "precompiled_charsmap": ""}, None),
    ({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "StripAccents"}]}, None),
])
def test_normalizer_slack(spec, slack):
    assert _normalizer_slack(spec) == slack


def test_bound_never_exceeds_the_real_count(tok):
    bound = PromptBound.from_backend(tok.backend)
    assert bound.slack == 1 and bound.bytes_per_char == 1  # byte-level BPE, no normalizer
    rng = random.Random(7)
    alphabet = "ab cdé漢字🙂\n\t" + "".join(chr(c) for c in range(0x20, 0x7f))
    texts = ["a" * 5000, " " * 5000, "🙂" * 2000, "-=" * 3000]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 4000))) for _ in range(50)]
    for text in texts:
        real = len(tok.encode(text))
        assert bound.min_tokens(len(text)) <= real
        assert bound.min_tokens_from_bytes(len(text.encode())) <= real


def test_no_bound_means_zero():
    bound = PromptBound(10, None)
    assert bound.min_tokens(10**9) == 0
    assert bound.min_tokens_from_bytes(10**9) == 0
    assert bound.bytes_for_tokens(1) > 10**15


def test_bound_catches_a_prompt_that_cannot_fit(tok):
    bound = PromptBound.from_backend(tok.backend)
    assert bound.min_tokens(12 * 1024 * 1024) > 2048

import random
from pathlib import Path

import pytest

from dynamo.llm.detokenizer import IncrementalDetokenizer
from dynamo.llm.tokenizer import Tokenizer
from tests.llm import tiny_model_dir

TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "Ünïcödé àccénts: café, naïve, façade, Zürich, Ångström",
    "emoji 😀🎉 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 keycap 1️⃣",
    "中文文本，日本語のテキスト、한국어 텍스트 ✓ → ∑ ∞",
    "def f(x):\n    return {'ключ': x}  # 注释\n\n",
    "   spaces   and\ttabs\n\nnewlines   ",
    "🙂" * 40 + "終" * 40,
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return Tokenizer.from_dir(tiny_model_dir(tmp_path_factory))


def stream(tok, ids, chunk=1, prompt_ids=None, skip=True, concat=True):
    d = IncrementalDetokenizer(tok, prompt_ids=prompt_ids, skip_special_tokens=skip)
    assert d._concat  # byte-level decoder: the fast path
    d._concat = concat
    pieces = [d.add(ids[i:i + chunk]) for i in range(0, len(ids), chunk)]
    return pieces, d.flush()


@pytest.mark.parametrize("text", TEXTS)
def test_token_by_token_equals_full_decode(tok, text):
    ids = tok.encode(text)
    pieces, tail = stream(tok, ids)
    assert "".join(pieces) + tail == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)
    assert tail == ""


@pytest.mark.parametrize("chunk", [2, 3, 7])
def test_multi_token_chunks(tok, chunk):
    text = "".join(TEXTS)
    ids = tok.encode(text)
    pieces, tail = stream(tok, ids, chunk=chunk, prompt_ids=tok.encode("prompt: "))
    assert "".join(pieces) + tail == text
    assert not any("\ufffd" in p for p in pieces)


def test_holds_back_partial_character(tok):
    ids = tok.encode("😀")
    assert len(ids) > 1  # the byte-level tokenizer splits the emoji
    d = IncrementalDetokenizer(tok)
    assert [d.add([i]) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert d.add(ids[-1:]) == "😀"


def test_flush_returns_incomplete_tail(tok):
    ids = tok.encode("ab😀")
    d = IncrementalDetokenizer(tok)
    emitted = "".join(d.add([i]) for i in ids[:-1])
    assert emitted == "ab"
    assert d.flush() == tok.decode(ids[:-1])[len("ab"):]


@pytest.mark.parametrize("skip", [True, False])
def test_special_tokens(tok, skip):
    ids = tok.encode("<|im_start|>assistant\nhé llo 😀<|im_end|>") + [2, 3]
    pieces, tail = stream(tok, ids, prompt_ids=[4, 100, 200], skip=skip)
    assert "".join(pieces) + tail == tok.decode(ids, skip_special_tokens=skip)
    assert ("<|im_end|>" in "".join(pieces)) is not skip


@pytest.mark.parametrize("concat", [True, False], ids=["bytelevel-fast-path", "generic-path"])
def test_random_ids_match_full_decode(tok, concat):
    # Arbitrary ids (as a random-weight model emits) may form invalid UTF-8; the stream
    # must still equal the full decode.
    rng = random.Random(7)
    for _ in range(300):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 60))]
        skip = rng.random() < 0.5
        pieces, tail = stream(tok, ids, chunk=rng.randrange(1, 4), prompt_ids=[4, 9], skip=skip, concat=concat)
        assert "".join(pieces) + tail == tok.decode(ids, skip_special_tokens=skip)


def test_long_stream_window_stays_small(tok):
    # A long text shipped with the repository (not a host file): the READMEs plus the
    # multilingual samples above: over 10k characters, thousands of tokens.
    repo = Path(__file__).resolve().parents[2]
    readmes = [repo / "README.md", *sorted((repo / "dynamo").glob("*/README.md"))]
    text = "".join(p.read_text() for p in readmes) + "".join(TEXTS) * 20
    assert len(text) > 10_000
    ids = tok.encode(text)
    d = IncrementalDetokenizer(tok)
    out = []
    for i in ids:
        out.append(d.add([i]))
        assert len(d._ids) <= 80  # O(window) memory and decode cost, not O(sequence)
    assert "".join(out) + d.flush() == text


def test_prompt_ending_mid_character(tok):
    ids = tok.encode("日本")
    d = IncrementalDetokenizer(tok, prompt_ids=ids[:-1])
    assert d.add(tok.encode("x")) == "x"


def test_empty_add(tok):
    d = IncrementalDetokenizer(tok)
    assert d.add([]) == "" and d.flush() == ""

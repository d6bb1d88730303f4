"""The segmented encoder against the tokenizer itself: a prompt cut after each special marker
tokenizes to exactly the whole string's ids, whatever the text around the markers (checked on many
random prompts with the tiny model's byte-level BPE); repeated pieces come from the cache; the cache
keeps to its byte budget; and a tokenizer for which pieces are not independent (Metaspace that marks
only the first piece) is never trusted."""

from __future__ import annotations

import random
import threading

import pytest
from tokenizers import AddedToken, Tokenizer as HFTokenizer, models, pre_tokenizers

from dynamo.llm.token_cache import MIN_CACHED_CHARS, SegmentedEncoder, TokenCache
from dynamo.llm.tokenizer import Tokenizer

MARKERS = ["<|im_start|>", "<|im_end|>", "</s>"]
ALPHABET = ["a", "b", "ab", " ", "  ", "\n", "\n\n", "é", "日本", "!", "'s", "12", "\t", "<|im", "|>", "<", " <"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model)


def random_prompt(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 12)):
        parts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 200))))
        parts.append(rng.choice(MARKERS))
    return "".join(parts[: rng.randint(1, len(parts))])


def test_pieces_tokenize_exactly_as_the_whole_string(tokenizer):
    encoder = SegmentedEncoder(tokenizer, TokenCache(1 << 20))
    assert encoder.trusted
    rng = random.Random(7)
    for _ in range(300):
        text = random_prompt(rng)
        assert "".join(encoder.pieces(text)) == text
        assert encoder._encode_pieces(encoder.pieces(text)) == tokenizer.encode(text), repr(text)


def test_repeated_pieces_come_from_the_cache_and_agree(tokenizer):
    cache = TokenCache(1 << 20)
    encoder = SegmentedEncoder(tokenizer, cache)
    system = "<|im_start|>system\n" + "You read files and run tools. " * 40 + "<|im_end|>\n"
    history = system
    for turn in range(12):  # past the checked prompts: pieces alone from then on
        history += f"<|im_start|>user\nquestion {turn} " * 3 + "<|im_end|>\n"
        count, ids = encoder.encode_capped(history, 1 << 20)
        assert ids == tokenizer.encode(history) and count == len(ids)
        history += "<|im_start|>assistant\n" + f"answer {turn} " * 30 + "<|im_end|>\n"
    assert encoder.trusted and cache.hits >= 11 and len(cache) >= 12
    count, ids = encoder.encode_capped(history, 10)  # over the cap: counted, not returned
    assert ids is None and count == len(tokenizer.encode(history))


def test_the_cache_keeps_to_its_budget_least_recently_used_out_first():
    cache = TokenCache(3500)  # three entries of 600 chars + 100 ids (1,120 bytes each) fit, not four
    keys = [(1, str(i) * 600) for i in range(6)]
    for key in keys[:3]:
        cache.put(key, list(range(100)))
    assert cache.get(keys[0]) is not None  # now the most recent
    cache.put(keys[3], list(range(100)))
    assert cache.bytes <= 3500 and cache.get(keys[1]) is None and cache.get(keys[0]) is not None
    cache.put((1, "x" * 5000), [1])  # bigger than the whole budget: not kept
    assert cache.get((1, "x" * 5000)) is None and cache.bytes <= 3500


def metaspace_first_tokenizer() -> Tokenizer:
    vocab = {"[UNK]": 0, "▁a": 1, "a": 2, "▁": 3, "▁b": 4, "b": 5}
    hf = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    hf.add_special_tokens([AddedToken("<|x|>", special=True, normalized=False)])
    return Tokenizer(hf)


def test_a_tokenizer_that_marks_only_the_first_piece_is_not_trusted():
    tok = metaspace_first_tokenizer()
    encoder = SegmentedEncoder(tok, TokenCache(1 << 20))
    text = "a<|x|>b" + " a" * MIN_CACHED_CHARS
    pieces = encoder.pieces(text)
    assert encoder._encode_pieces(pieces) != tok.encode(text)  # why: "b" alone would get the first piece's mark
    assert not encoder.trusted and encoder.encode_capped(text, 1 << 20)[1] == tok.encode(text)


def test_a_tokenizer_without_special_markers_tokenizes_whole_strings(tokenizer):
    hf = HFTokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    encoder = SegmentedEncoder(Tokenizer(hf), TokenCache(1 << 20))
    assert not encoder.trusted and encoder.pieces("a a") == ["a a"]


def test_a_piece_another_thread_is_tokenizing_is_waited_for_not_tokenized_again(tokenizer):
    """A burst of prompts with the same new system prompt: one prep thread tokenizes it, the others
    take its ids once stored (here the main thread plays the one tokenizing, holding its claim)."""
    cache = TokenCache(1 << 20)
    encoder = SegmentedEncoder(tokenizer, cache)
    encoder._left_to_check = 0  # pieces alone, as after the first prompts
    system = "<|im_start|>system\n" + "You read files and run tools. " * 40 + "<|im_end|>"
    prompt = system + "\n<|im_start|>user\nhi<|im_end|>\n"
    piece = max(encoder.pieces(prompt), key=len)  # the system turn's text
    key = (encoder._owner, piece)
    assert cache.claim(key) is None  # this thread is now tokenizing the system turn
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(encoder.encode_capped(prompt, 1 << 20)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not result  # it waits for the claim, rather than tokenizing the piece again
    cache.put(key, tokenizer.encode(piece))
    cache.release(key)
    waiter.join(10)
    assert result[0][1] == tokenizer.encode(prompt)
    assert cache.hits == 1 and cache.misses == 1  # the piece was tokenized once, by its claimant


def test_a_claim_released_without_ids_leaves_the_waiter_to_tokenize(tokenizer):
    cache = TokenCache(1 << 20)
    encoder = SegmentedEncoder(tokenizer, cache)
    encoder._left_to_check = 0
    system = "<|im_start|>system\n" + "Plan, then act. " * 40 + "<|im_end|>"
    key = (encoder._owner, max(encoder.pieces(system), key=len))
    assert cache.claim(key) is None
    threading.Timer(0.2, cache.release, (key,)).start()  # its tokenizer failed: nothing stored
    assert encoder.encode_capped(system + "\n", 1 << 20)[1] == tokenizer.encode(system + "\n")
    assert cache.claim(key) is None  # no claim left behind: the next prompt tokenizes it for the cache


def test_the_cost_of_a_prompt_is_what_is_neither_cached_nor_being_tokenized(tokenizer):
    cache = TokenCache(1 << 20)
    encoder = SegmentedEncoder(tokenizer, cache)
    system = "<|im_start|>system\n" + "You read files and run tools. " * 40 + "<|im_end|>"
    tools = "<|im_start|>tools\n" + "grep, sed, awk and friends. " * 30 + "<|im_end|>"
    prompt = system + tools + "\n<|im_start|>user\nhi<|im_end|>\n"
    assert encoder.encode_cost(prompt).new_chars == len(prompt)  # the first prompts are checked whole
    encoder._left_to_check = 0
    assert encoder.encode_cost(prompt).new_chars == len(prompt) and not encoder.encode_cost(prompt).pending
    encoder.encode_capped(prompt, 1 << 20)
    hits = cache.hits
    cost = encoder.encode_cost(prompt)
    def short(text: str) -> int:  # pieces too short for the cache, tokenized every time
        return sum(len(p) for p in encoder.pieces(text) if len(p) < MIN_CACHED_CHARS)

    assert cost.new_chars == short(prompt) and not cost.pending  # only what skips the cache is left
    assert cache.hits == hits  # a peek: not counted as a use
    other = system + "<|im_start|>tools\n" + "A new tool list. " * 30 + "<|im_end|>"
    new_piece = next(p for p in encoder.pieces(other) if "A new tool list" in p)
    key = (encoder._owner, new_piece)
    assert cache.claim(key) is None  # another thread is tokenizing the new tool list
    cost = encoder.encode_cost(other)
    assert cost.pending == [key] and cost.new_chars == short(other)
    called: list[int] = []
    assert encoder.when_released(key, lambda: called.append(1))
    cache.put(key, tokenizer.encode(new_piece))
    cache.release(key)
    assert called == [1]
    assert not encoder.when_released(key, lambda: called.append(2))  # nobody is tokenizing it now
    assert called == [1] and encoder.encode_cost(other).new_chars == short(other)


def test_a_plain_tokenizer_costs_the_whole_text(tokenizer):
    cost = tokenizer.encode_cost("x" * 100)
    assert cost.new_chars == 100 and not cost.pending

import pytest

from dynamo.llm.tokenizer import Tokenizer
from tests.llm import tiny_model_dir

TEXTS = [
    "Hello, world! This is a test of the tokenizer.",
    "def f(x):\n    return x * 2  # comment\n",
    "Ünïcödé àccénts: café, naïve, façade, Zürich",
    "emoji 😀🎉👨‍👩‍👧 and flags 🇫🇷",
    "中文文本，日本語のテキスト、한국어 텍스트",
    "  leading and trailing spaces  \t\n",
    "",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return Tokenizer.from_dir(tiny_model_dir(tmp_path_factory))


@pytest.mark.parametrize("text", TEXTS)
def test_roundtrip(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_special_tokens(tok):
    assert tok.vocab_size == 4096 and len(tok) == 4096
    assert (tok.bos_token, tok.eos_token) == ("<s>", "<|im_end|>")
    assert tok.eos_token_ids == [5, 2]
    assert tok.special_ids == frozenset(range(6))
    assert tok.id_to_token(4) == "<|im_start|>"
    assert tok.convert_ids_to_tokens([1, 5]) == ["<s>", "<|im_end|>"]
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 4 and ids[-1] == 5
    assert tok.decode(ids) == "user\nhi"
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nhi<|im_end|>"


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)

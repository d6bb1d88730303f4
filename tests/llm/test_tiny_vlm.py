"""The tiny vision-language model builder: deterministic files, the image token where the model's
config, tokenizer and chat template agree on it, and the processor settings that make vLLM expand
each `<image>` into IMAGE_TOKENS positions. (Serving it: tests/vllm/test_images_vllm.py.)"""

import json

import pytest

from dynamo.llm.chat_template import ChatTemplate
from dynamo.llm.media import image_token_of
from dynamo.llm.tiny_model import STAMP_FILE
from dynamo.llm.tiny_vlm import IMAGE_SIZE, IMAGE_TOKEN, IMAGE_TOKENS, PATCH_SIZE, build_tiny_vlm
from dynamo.llm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny-vlm")
    return build_tiny_vlm(base / "a"), build_tiny_vlm(base / "b")


@pytest.mark.slow  # trains the tokenizer (seconds, minutes on a loaded box)
def test_builds_are_byte_identical(two_builds):
    a, b = two_builds
    names = sorted(p.name for p in a.iterdir())
    assert "model.safetensors" not in names and "preprocessor_config.json" in names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_config_tokenizer_and_template_agree_on_the_image_token(two_builds):
    model = two_builds[0]
    config = json.loads((model / "config.json").read_text())
    image_id = image_token_of(config)
    tokenizer = Tokenizer.from_dir(model)
    text = ChatTemplate.from_dir(model).render([{"role": "user", "content": [
        {"type": "text", "text": "look:"}, {"type": "image_url", "image_url": {"url": "x"}}]}])
    assert IMAGE_TOKEN in text and tokenizer.encode(text).count(image_id) == 1
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    processor = json.loads((model / "processor_config.json").read_text())
    assert processor["patch_size"] == PATCH_SIZE and IMAGE_TOKENS == (IMAGE_SIZE // PATCH_SIZE) ** 2
    assert json.loads((model / STAMP_FILE).read_text())["kind"] == "llava"

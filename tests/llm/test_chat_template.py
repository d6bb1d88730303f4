"""The chat template (dynamo/llm/chat_template.py): a model's Jinja template rendered in a sandbox, message
content parts flattened to the text templates read (images kept as placeholders for vision templates, an
assistant's refusal as its text), and a template's failure a ChatTemplateError."""

import json

import pytest

from dynamo.llm.chat_template import ChatTemplate, ChatTemplateError
from tests.llm import tiny_model_dir

CONVERSATION = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Bye"},
]
CHATML = (
    "<|im_start|>system\nYou are helpful.<|im_end|>\n"
    "<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\nHello.<|im_end|>\n"
    "<|im_start|>user\nBye<|im_end|>\n"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def tmpl(model_dir):
    return ChatTemplate.from_dir(model_dir)


def test_chatml_with_generation_prompt(tmpl):
    assert tmpl.render(CONVERSATION) == CHATML + "<|im_start|>assistant\n"


def test_chatml_without_generation_prompt(tmpl):
    assert tmpl.render(CONVERSATION, add_generation_prompt=False) == CHATML


def test_content_parts_are_flattened(tmpl):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert tmpl.render(msgs, add_generation_prompt=False) == "<|im_start|>user\na\nb<|im_end|>\n"
    assert msgs[0]["content"][0] == {"type": "text", "text": "a"}  # caller's messages untouched


def test_non_text_part_rejected(tmpl):
    msgs = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}]
    with pytest.raises(ChatTemplateError, match="input_audio"):
        tmpl.render(msgs)


def test_an_assistants_refusal_part_is_what_it_said(tmpl):
    """OpenAI lets a client replay an assistant's refusal as a `refusal` part: the model reads it as that
    message's text; only an assistant refuses, so another role's refusal part is still refused."""
    msgs = [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}]
    assert tmpl.render(msgs, add_generation_prompt=False).endswith(
        "<|im_start|>assistant\nI can't help with that.<|im_end|>\n")
    with pytest.raises(ChatTemplateError, match="refusal"):
        tmpl.render([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}])


VISION_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}:{% if m['content'] is string %}{{ m['content'] }}"
                   "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}"
                   "{% endif %}{% endfor %}{% endif %}|{% endfor %}")


def test_image_parts_reach_the_template_as_images():
    """A vision model's template sees each image as {"type": "image"} where it stands among the text parts;
    a message of text parts only is still one string."""
    msgs = [{"role": "system", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": [{"type": "text", "text": "what is "}, {"type": "image_url",
                                          "image_url": {"url": "data:image/png;base64,AA"}},
                                         {"type": "text", "text": " and "}, {"type": "image_url", "image_url": "u"}]}]
    out = ChatTemplate(VISION_TEMPLATE).render(msgs, add_generation_prompt=False)
    assert out == "system:be brief|user:what is <image> and <image>|"


def test_image_part_on_a_text_template_is_an_error(tmpl):
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    with pytest.raises(ChatTemplateError):
        tmpl.render(msgs)


def test_none_content_renders_empty(tmpl):
    out = tmpl.render([{"role": "assistant", "content": None}], add_generation_prompt=False)
    assert out == "<|im_start|>assistant\n<|im_end|>\n"


def test_raise_exception_maps_to_chat_template_error():
    t = ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok")
    assert t.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(ChatTemplateError, match="first must be user") as e:
        t.render([{"role": "system", "content": "x"}])
    assert isinstance(e.value, ValueError)


def test_runtime_and_syntax_errors():
    with pytest.raises(ChatTemplateError, match="compile"):
        ChatTemplate("{% for %}")
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ messages[0]['content'] + 1 }}").render([{"role": "user", "content": "x"}])


def test_hf_globals_filters_and_kwargs():
    src = ("{{ bos_token }}|{{ tools | tojson }}|{{ {'k': 'é'} | tojson(indent=2) }}|"
           "{{ strftime_now('%Y') | length }}|{{ extra }}|{% for m in messages %}{% if loop.first %}"
           "{% continue %}{% endif %}{{ m.content }}{% endfor %}")
    t = ChatTemplate(src, {"bos_token": "<s>", "eos_token": "</s>"})
    tools = [{"type": "function", "function": {"name": "f<x>"}}]
    out = t.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], tools=tools, extra="E")
    assert out == f"<s>|{json.dumps(tools)}|{json.dumps({'k': 'é'}, indent=2, ensure_ascii=False)}|4|E|b"
    assert t.render([], bos_token="B").startswith("B|null|")


def test_sandbox_blocks_unsafe_access():
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}").render([])


def test_from_tokenizer_config_string_and_list(model_dir, tmp_path):
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert ChatTemplate.from_dir(tmp_path).render(CONVERSATION) == CHATML + "<|im_start|>assistant\n"
    cfg["chat_template"] = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ eos_token }}"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert ChatTemplate.from_dir(tmp_path).render([]) == "D<|im_end|>"


def test_missing_template_is_clear_error(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatTemplate.from_dir(tmp_path)

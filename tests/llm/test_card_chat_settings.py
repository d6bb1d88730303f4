"""A worker's custom chat template and default thinking mode travel in its model card, as NVIDIA
Dynamo's do (`chat_template_file.hf_chat_template.is_custom`, `runtime_data.default_thinking_mode`),
and the frontend's pipeline renders with them."""

from __future__ import annotations

import msgspec

from dynamo.llm.chat_template import with_thinking_default
from dynamo.llm.model_card import RuntimeConfig, build_card, card_decoder, card_record
from dynamo.llm.preprocessor import ModelPipeline

TEMPLATE = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
            "|thinking={{ enable_thinking if enable_thinking is defined else 'unset' }}")


def _card(tiny_model, tmp_path, mode: str | None = "disabled"):
    template = tmp_path / "custom.jinja"
    template.write_text(TEMPLATE)
    runtime = RuntimeConfig(runtime_data={"default_thinking_mode": mode} if mode else {})
    return build_card(tiny_model, name="m", block_size=16, runtime_config=runtime, chat_template=template), template


def test_the_custom_template_is_the_cards_chat_template_marked_custom(tiny_model, tmp_path):
    card, template = _card(tiny_model, tmp_path)
    assert card.files["hf_chat_template"].path == str(template) and card.chat_template_custom
    record = msgspec.json.decode(card_record(card, "ns", "backend", "generate", 1))
    assert record["card_json"]["chat_template_file"]["hf_chat_template"]["is_custom"] is True
    assert record["card_json"]["runtime_config"]["runtime_data"] == {"default_thinking_mode": "disabled"}
    back = card_decoder.decode(card_record(card, "ns", "backend", "generate", 1))
    assert back.chat_template_custom and back.default_thinking_mode == "disabled" and back.mdcsum == card.mdcsum
    own = build_card(tiny_model, name="m", block_size=16)
    assert not own.chat_template_custom and own.mdcsum != card.mdcsum  # workers must not mix templates


def test_the_pipeline_renders_with_the_custom_template_and_the_default(tiny_model, tmp_path):
    card, _ = _card(tiny_model, tmp_path)
    pipeline = ModelPipeline(card)
    messages = [{"role": "user", "content": "hi"}]
    assert pipeline.chat_prompt_text(messages) == "<user>hi|thinking=False"
    assert pipeline.chat_prompt_text(messages, template_kwargs={"enable_thinking": True}).endswith("=True")
    assert ModelPipeline(_card(tiny_model, tmp_path, None)[0]).chat_prompt_text(messages).endswith("=unset")


def test_the_default_sets_every_spelling_unless_the_request_controls_thinking():
    assert with_thinking_default(None, "enabled") == {"thinking": True, "enable_thinking": True,
                                                      "thinking_mode": "enabled"}
    assert with_thinking_default({"x": 1}, "disabled")["enable_thinking"] is False
    for control in ({"thinking": True}, {"enable_thinking": False}, {"reasoning_effort": "low"},
                    {"thinking_mode": "enabled"}):
        assert with_thinking_default(control, "disabled") == control
    assert with_thinking_default({"x": 1}, None) == {"x": 1}

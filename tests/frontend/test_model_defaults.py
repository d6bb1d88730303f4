"""The frontend's `--tool-call-parser`, `--reasoning-parser` and `--chat-template` (NVIDIA Dynamo's
`--dyn-chat-processor vllm|sglang` frontends take them): vLLM's spellings, checks at start, and the
worker's own card settings winning."""

from __future__ import annotations

import pytest

from dynamo.frontend.config import parse_frontend_args
from dynamo.frontend.model_defaults import ModelDefaults
from dynamo.llm.model_card import RuntimeConfig, build_card


def test_vllm_spellings_are_ours_and_the_template_may_be_a_file_or_the_text(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    config, warnings = parse_frontend_args(["--tool-call-parser", "openai", "--reasoning-parser", "openai_gptoss",
                                            "--chat-template", str(template)], environ={})
    assert (config.tool_call_parser, config.reasoning_parser, warnings) == ("harmony", "gpt_oss", [])
    assert config.chat_template == template.read_text()
    inline = parse_frontend_args(["--chat-template", "{{ messages[0].content }}"], environ={})[0]
    assert inline.chat_template == "{{ messages[0].content }}"


@pytest.mark.parametrize("argv, says", [(["--tool-call-parser", "nope"], "--dyn-tool-call-parser"),
                                        (["--chat-template", "/no/such.jinja"], "--chat-template"),
                                        (["--chat-template", "{% for x in y %}"], "--chat-template")])
def test_bad_defaults_stop_the_frontend_at_start(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_frontend_args(argv, environ={})
    assert exc.value.code == 2 and says in capsys.readouterr().err


def test_the_workers_own_settings_win(tiny_model, tmp_path):
    defaults = ModelDefaults("hermes", "qwen3", "{{ messages }}")
    bare = defaults.apply(build_card(tiny_model, name="m", block_size=16))
    assert (bare.runtime_config.tool_call_parser, bare.runtime_config.reasoning_parser) == ("hermes", "qwen3")
    assert defaults.template_for(bare) == "{{ messages }}"
    named = defaults.apply(build_card(tiny_model, name="m", block_size=16, runtime_config=RuntimeConfig(
        tool_call_parser="mistral", reasoning_parser="deepseek_r1")))
    assert (named.runtime_config.tool_call_parser, named.runtime_config.reasoning_parser) == ("mistral", "deepseek_r1")
    custom = tmp_path / "c.jinja"
    custom.write_text("{{ messages }}")
    assert defaults.template_for(build_card(tiny_model, name="m", block_size=16, chat_template=custom)) is None

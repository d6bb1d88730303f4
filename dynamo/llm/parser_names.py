"""The output-parser and thinking-mode names a worker may put in its model card (`--dyn-tool-call-parser`,
`--dyn-reasoning-parser`, `--dyn-default-thinking-mode`), NVIDIA Dynamo's spellings, and the start-up
check that refuses an unknown one (at start, not at the first request)."""

from __future__ import annotations

# `--dyn-default-thinking-mode`'s values.
THINKING_MODES = ("enabled", "disabled")

# Parser names a worker may put in its card (`--dyn-tool-call-parser`, `--dyn-reasoning-parser`);
# the frontend's parser registry implements each (tests/frontend/test_parsers_contract.py).
# The tool-call formats of NVIDIA Dynamo's names known here (its newest kimi_k3, muse are refused at
# start rather than left unparsed for an agent).
TOOL_CALL_PARSERS = ("default", "hermes", "qwen25", "qwen3", "llama3_json", "mistral", "pythonic", "qwen3_coder",
                     "nemotron_nano", "nemotron_deci", "deepseek_v3", "deepseek_v3_1", "deepseek_v3_2", "harmony",
                     "kimi_k2", "kimi_k25", "glm45", "glm47", "minimax_m2", "jamba", "phi4", "deepseek_v4",
                     "gemma4", "minimax_m3", "inkling")
REASONING_PARSERS = ("basic", "qwen3", "qwen3_coder", "deepseek_r1", "gpt_oss", "mistral", "step3", "nemotron_nano",
                     "nemotron3", "nemotron_v3", "nemotron_deci", "kimi", "kimi_k2", "kimi_k25", "glm45", "glm47",
                     "granite", "minimax_m2", "minimax_append_think", "deepseek_v3", "deepseek_v3_1", "deepseek_v3_2",
                     "inkling",
                     # Dynamo's names of formats not known here: `<think>` tags, Dynamo's own fallback
                     "deepseek_v4", "deepseek_v41", "gemma4", "kimi_k3", "minimax_m3", "muse", "muse_glimmer")






# Other spellings Dynamo takes for a parser (`deepseek-v4`, `gemma-4`: any `-` reads as `_`).
PARSER_ALIASES = {"deepseekv4": "deepseek_v4", "gemma_4": "gemma4"}


def canonical_parser_name(name: str) -> str:
    name = name.replace("-", "_")
    return PARSER_ALIASES.get(name, name)


def check_parser_names(tool_call_parser: str | None, reasoning_parser: str | None) -> None:
    """Workers refuse an unknown parser at start-up instead of the frontend at first request."""
    for flag, value, known in (("--dyn-tool-call-parser", tool_call_parser, TOOL_CALL_PARSERS),
                               ("--dyn-reasoning-parser", reasoning_parser, REASONING_PARSERS)):
        if value and canonical_parser_name(value) not in known:
            raise ValueError(f"{flag}: unknown parser {value!r}; known: {', '.join(known)}")

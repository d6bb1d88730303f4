"""`--strip-anthropic-preamble` is on unless turned off, as in NVIDIA Dynamo 1.6.1 (flag and
DYN_STRIP_ANTHROPIC_PREAMBLE): a manifest written for Dynamo that says nothing gets Claude Code's
per-request billing line dropped from /v1/messages system prompts, so their prefix is reused."""

from __future__ import annotations

import pytest

from dynamo.frontend.config import parse_frontend_args


def strip(argv: list[str], environ: dict[str, str] | None = None) -> bool:
    return parse_frontend_args(argv, environ=environ or {})[0].strip_anthropic_preamble


def test_on_by_default():
    assert strip([]) is True
    assert strip(["--enable-anthropic-api"]) is True


@pytest.mark.parametrize("argv, environ, expected", [
    (["--no-strip-anthropic-preamble"], {}, False),
    (["--strip-anthropic-preamble"], {}, True),
    ([], {"DYN_STRIP_ANTHROPIC_PREAMBLE": "false"}, False),
    ([], {"DYN_STRIP_ANTHROPIC_PREAMBLE": "0"}, False),
    ([], {"DYN_STRIP_ANTHROPIC_PREAMBLE": "true"}, True),
    ([], {"DYN_STRIP_ANTHROPIC_PREAMBLE": ""}, True),  # an empty variable is unset: the default
    (["--strip-anthropic-preamble"], {"DYN_STRIP_ANTHROPIC_PREAMBLE": "false"}, True),  # the flag wins
])
def test_turned_off_or_on_by_flag_or_variable(argv, environ, expected):
    assert strip(argv, environ) is expected

"""Typed config: flags and DYN_* env twins generated from one dataclass; CLI wins."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from dynamo.frontend.config import FrontendConfig
from dynamo.runtime.config import build_parser, dump_config, parse_config, setting


@dataclass
class Sample:
    port: int = setting(8000, "port")
    name: str | None = setting(None, "name", env="CUSTOM_NAME")
    fast: bool = setting(False, "fast")
    tags: list = setting([], "tags")
    extra: dict | None = setting(None, "json")


def test_defaults_env_and_cli_precedence():
    assert parse_config(Sample, [], environ={}).port == 8000
    assert parse_config(Sample, [], environ={"DYN_PORT": "9"}).port == 9
    assert parse_config(Sample, ["--port", "7"], environ={"DYN_PORT": "9"}).port == 7
    assert parse_config(Sample, [], environ={"CUSTOM_NAME": "n"}).name == "n"
    assert parse_config(Sample, [], environ={"DYN_FAST": "true"}).fast is True
    assert parse_config(Sample, ["--no-fast"], environ={"DYN_FAST": "true"}).fast is False
    assert parse_config(Sample, ["--tags", "a", "b"], environ={}).tags == ["a", "b"]
    assert parse_config(Sample, ["--extra", '{"a": 1}'], environ={}).extra == {"a": 1}


def test_bad_env_value_is_a_clear_error():
    with pytest.raises(SystemExit, match="DYN_PORT"):
        parse_config(Sample, [], environ={"DYN_PORT": "eighty"})


def test_frontend_flags_follow_dynamo_names():
    config = parse_config(FrontendConfig, ["--router-mode", "kv", "--kv-overlap-score-weight", "2"],
                          environ={"DYN_HTTP_PORT": "8123", "DYN_ROUTER_MODE": "random"})
    assert (config.router_mode, config.http_port, config.overlap_score_weight) == ("kv", 8123, 2.0)
    assert json.loads(dump_config(config))["router_mode"] == "kv"
    with pytest.raises(SystemExit):
        parse_config(FrontendConfig, ["--router-mode", "nope"], environ={})


@dataclass
class EnvOnly:
    host: str | None = setting(None, "host", flag=False)
    port: int = setting(80, "port", env=("DYN_PORT", "LEGACY_PORT"))


def test_env_only_setting_has_no_flag_but_reads_its_variable():
    parser = build_parser(EnvOnly)
    assert {o for a in parser._actions for o in a.option_strings} == {"-h", "--help", "--port"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--host", "h"])
    assert parse_config(EnvOnly, [], environ={"DYN_HOST": "h"}).host == "h"


def test_env_names_are_read_in_order():
    assert parse_config(EnvOnly, [], environ={"LEGACY_PORT": "81"}).port == 81
    assert parse_config(EnvOnly, [], environ={"LEGACY_PORT": "81", "DYN_PORT": "82"}).port == 82
    assert parse_config(EnvOnly, [], environ={"LEGACY_PORT": "81", "DYN_PORT": ""}).port == 81
    assert parse_config(EnvOnly, ["--port", "83"], environ={"DYN_PORT": "82"}).port == 83
    with pytest.raises(SystemExit, match="LEGACY_PORT"):
        parse_config(EnvOnly, [], environ={"LEGACY_PORT": "x"})

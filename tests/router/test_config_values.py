"""The values the router's numeric settings take, flag and `DYN_*` twin alike: NVIDIA Dynamo's
'None' (or nothing) unsets a nullable threshold, and a value no router could act on (NaN, infinity,
outside the range Dynamo allows) stops the command with argparse's exit 2, naming the flag. The
frontend and `python -m dynamo.router` embed these settings, so both commands are checked."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from dynamo.frontend.config import parse_frontend_args
from dynamo.router.compat_flags import ROUTER_SERVICE_FLAGS
from dynamo.router.config import ROUTER_BOUNDS, KvRouterConfig
from dynamo.router.service import RouterServiceConfig
from dynamo.runtime.compat_args import parse_with_compat
from dynamo.runtime.config import parse_config

NULLABLE = [("--active-decode-blocks-threshold", "DYN_ACTIVE_DECODE_BLOCKS_THRESHOLD", "0.5", 0.5),
            ("--active-prefill-tokens-threshold", "DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD", "100", 100),
            ("--active-prefill-tokens-threshold-frac", "DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD_FRAC", "1.5", 1.5),
            ("--router-queue-threshold", "DYN_ROUTER_QUEUE_THRESHOLD", "0.9", 0.9)]


def field_of(flag: str) -> str:
    return flag[2:].replace("-", "_")


def frontend(argv: list[str], environ: dict[str, str] | None = None):
    return parse_frontend_args(argv, environ=environ or {})[0]


def router_service(argv: list[str], environ: dict[str, str] | None = None) -> RouterServiceConfig:
    return parse_with_compat(RouterServiceConfig, ROUTER_SERVICE_FLAGS, ["--endpoint", "ns.backend.generate", *argv],
                             prog="python -m dynamo.router", environ=environ or {})[0]


COMMANDS = [pytest.param(frontend, id="frontend"), pytest.param(router_service, id="router")]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag, env, raw, value", NULLABLE)
@pytest.mark.parametrize("unset", ["None", ""])
def test_none_or_nothing_unsets_a_nullable_threshold(command, flag, env, raw, value, unset):
    name = field_of(flag)
    assert getattr(command([flag, raw]), name) == value
    assert getattr(command([flag, unset]), name) is None
    assert getattr(command([], {env: unset}), name) is None
    assert getattr(command([flag, unset], {env: raw}), name) is None  # the flag's 'None' wins over the variable
    assert getattr(command([], {env: raw}), name) == value


@pytest.mark.parametrize("flag, env, raw, value", NULLABLE)
def test_none_is_spelled_as_dynamo_spells_it(flag, env, raw, value, capsys):
    with pytest.raises(SystemExit) as exc:  # Dynamo's nullable_float compares the text exactly too
        frontend([flag, "none"])
    assert exc.value.code == 2 and flag in capsys.readouterr().err


REFUSED = [
    ("--active-decode-blocks-threshold", "1.5"), ("--active-decode-blocks-threshold", "-0.1"),
    ("--active-decode-blocks-threshold", "nan"), ("--active-prefill-tokens-threshold-frac", "inf"),
    ("--router-queue-threshold", "nan"), ("--router-temperature", "nan"), ("--router-temperature", "inf"),
    ("--kv-overlap-score-weight", "nan"), ("--router-kv-overlap-score-weight", "inf"),
    ("--router-ttl-secs", "nan"), ("--router-ttl-secs", "inf"), ("--router-ttl-secs", "0"),
    ("--router-queue-timeout-secs", "nan"), ("--router-queue-timeout-secs", "-1"),
    ("--router-queue-max-requests", "-1"), ("--inhibited-duration-secs", "nan"),
    ("--router-prune-target-ratio", "nan"), ("--router-max-tree-size", "0"),
    ("--router-host-cache-hit-weight", "nan"), ("--router-disk-cache-hit-weight", "1.5"),
    ("--router-kv-overlap-score-credit", "inf"), ("--router-kv-overlap-score-credit-decay", "nan"),
    ("--router-prefill-load-scale", "-inf"), ("--router-decode-active-request-weight", "nan"),
    ("--router-output-blocks-horizon", "-1"), ("--active-prefill-tokens-threshold", "-1"),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag, raw", REFUSED)
def test_a_value_no_router_can_use_is_refused_naming_its_flag(command, flag, raw, capsys):
    with pytest.raises(SystemExit) as exc:
        command([flag, raw])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    # An alias is named by the setting's first flag (the one --help lists first).
    assert ("--kv-overlap-score-weight" if "overlap-score-weight" in flag else flag) in err and raw in err


def env_of(flag: str) -> str:
    field = next(f for f in dataclasses.fields(KvRouterConfig) if f.name == field_of(flag) or
                 f.name == "overlap_score_weight" and "overlap-score-weight" in flag)
    env = field.metadata.get("env")
    return env if isinstance(env, str) else "DYN_" + field.name.upper()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag, raw", REFUSED)
def test_the_same_value_from_the_variable_is_refused_too(command, flag, raw, capsys):
    env = env_of(flag)
    with pytest.raises(SystemExit) as exc:
        command([], {env: raw})
    err = capsys.readouterr().err
    assert exc.value.code == 2 and env in err and raw in err


@pytest.mark.parametrize("argv", [["--active-decode-blocks-threshold", "0"], ["--active-decode-blocks-threshold", "1"],
                                  ["--router-temperature", "0"], ["--router-prune-target-ratio", "1"],
                                  ["--router-host-cache-hit-weight", "1"], ["--router-queue-timeout-secs", "0"]])
def test_the_ends_of_each_range_are_accepted(argv):
    assert getattr(frontend(argv), field_of(argv[0])) == float(argv[1])


def is_numeric(hint) -> bool:
    kinds = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
    return any(isinstance(t, type) and issubclass(t, (int, float)) and t is not bool for t in kinds)


def test_every_numeric_router_setting_has_a_range():
    """A numeric setting added later gets a range too (else NaN would pass it unchecked)."""
    hints = typing.get_type_hints(KvRouterConfig)
    assert {f.name for f in dataclasses.fields(KvRouterConfig) if is_numeric(hints[f.name])} == set(ROUTER_BOUNDS)


def test_a_config_built_in_code_is_held_to_the_same_ranges():
    with pytest.raises(ValueError, match="--router-temperature"):
        KvRouterConfig(router_temperature=float("nan")).validate()
    with pytest.raises(ValueError, match="--active-decode-blocks-threshold"):
        KvRouterConfig(active_decode_blocks_threshold=2.0).validate()
    KvRouterConfig(active_decode_blocks_threshold=None, router_queue_threshold=None).validate()


@pytest.mark.parametrize("argv, environ, named", [
    (["--router-min-initial-workers", "-1"], {}, "--router-min-initial-workers"),
    ([], {"DYN_ROUTER_MIN_INITIAL_WORKERS": "-1"}, "DYN_ROUTER_MIN_INITIAL_WORKERS"),
    (["--wait-for-workers-secs", "nan"], {}, "--wait-for-workers-secs"),
    (["--http-body-limit-mb", "nan"], {}, "--http-body-limit-mb"),
    (["--mm-max-data-url-mb", "inf"], {}, "--mm-max-data-url-mb"),  # was an OverflowError traceback
    ([], {"DYN_FIRST_TOKEN_TIMEOUT_SECS": "nan"}, "DYN_FIRST_TOKEN_TIMEOUT_SECS"),
])
def test_the_frontends_own_settings_refuse_what_no_frontend_can_use(argv, environ, named, capsys):
    with pytest.raises(SystemExit) as exc:
        frontend(argv, environ)
    assert exc.value.code == 2 and named in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--wait-for-workers-secs", "nan"], ["--stream-idle-timeout-secs", "inf"]])
def test_the_router_services_own_settings_refuse_non_finite_values(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        router_service(argv)
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err


def test_parse_config_refuses_too():
    """What the frontend's and the service's parsers share (runtime/config.py's parse_config)."""
    with pytest.raises(SystemExit) as exc:
        parse_config(KvRouterConfig, ["--router-queue-threshold", "nan"], environ={})
    assert exc.value.code == 2

"""KvRouterConfig parsed the way users write it: NVIDIA Dynamo's flag spellings and `DYN_*`
env names for the busy thresholds and the router queue (shared/reference/dynamo.md, router
flags table), through the same generated CLI the frontend and `dynamo.router` use; and the
router service's worker-stream deadlines (the frontend's flags and env names)."""

from __future__ import annotations

import pytest

from dynamo.llm.worker_client import Deadlines
from dynamo.runtime.config import parse_config
from dynamo.router.config import KvRouterConfig


def parse(argv: list[str], environ: dict[str, str] | None = None) -> KvRouterConfig:
    return parse_config(KvRouterConfig, argv, environ=environ or {})


def test_busy_thresholds_from_dynamos_flags():
    config = parse(["--active-decode-blocks-threshold", "0.85", "--active-prefill-tokens-threshold", "5000",
                    "--active-prefill-tokens-threshold-frac", "2.5", "--router-queue-threshold", "1.5"])
    assert config.active_decode_blocks_threshold == 0.85
    assert config.active_prefill_tokens_threshold == 5000
    assert config.active_prefill_tokens_threshold_frac == 2.5
    assert config.router_queue_threshold == 1.5


def test_busy_thresholds_from_dynamos_env_names_and_flag_wins():
    env = {"DYN_ACTIVE_DECODE_BLOCKS_THRESHOLD": "0.9", "DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD": "7000",
           "DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD_FRAC": "3"}
    config = parse(["--active-prefill-tokens-threshold", "100"], env)
    assert config.active_decode_blocks_threshold == 0.9
    assert config.active_prefill_tokens_threshold == 100  # command line > environment
    assert config.active_prefill_tokens_threshold_frac == 3.0


def test_thresholds_are_off_unless_given():
    config = parse([])
    assert (config.active_decode_blocks_threshold, config.active_prefill_tokens_threshold,
            config.active_prefill_tokens_threshold_frac, config.router_queue_threshold) == (None, None, None, None)


@pytest.mark.parametrize("argv", [["--active-prefill-tokens-threshold", "-1"],
                                  ["--router-queue-threshold", "1", "--router-queue-max-requests", "0"]])
def test_invalid_thresholds_are_refused_at_parse(argv, capsys):
    with pytest.raises(SystemExit):
        parse(argv)
    err = capsys.readouterr().err
    assert "must be >= 0" in err or "needs --router-queue-max-requests" in err


def test_a_threshold_that_is_not_a_number_names_its_variable():
    with pytest.raises(SystemExit, match="DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD"):
        parse([], {"DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD": "lots"})


def test_router_service_deadlines_are_off_by_default_and_set_by_flag_or_env():
    from dynamo.router.service import RouterServiceConfig

    endpoint = ["--endpoint", "dynamo.backend.generate"]
    default = parse_config(RouterServiceConfig, endpoint, environ={})
    assert default.deadlines() == Deadlines()  # no deadline on its worker streams
    config = parse_config(RouterServiceConfig, [*endpoint, "--first-token-timeout-secs", "30"],
                          environ={"DYN_FIRST_TOKEN_TIMEOUT_SECS": "9", "DYN_STREAM_IDLE_TIMEOUT_SECS": "2.5"})
    assert config.deadlines() == Deadlines(first_output=30.0, idle=2.5)  # flag > env
    with pytest.raises(SystemExit):
        parse_config(RouterServiceConfig, [*endpoint, "--stream-idle-timeout-secs", "0"], environ={})


def test_router_service_namespace_as_nvidia_dynamo_reads_it():
    """It serves in DYN_NAMESPACE, else the --endpoint's namespace; its workers are in that namespace, with
    DYN_NAMESPACE_WORKER_SUFFIX appended (so an operator-set DYN_NAMESPACE wins over a stale --endpoint)."""
    from dynamo.router.service import RouterServiceConfig

    endpoint = ["--endpoint", "pool0.prefill.generate"]
    plain = parse_config(RouterServiceConfig, endpoint, environ={})
    assert (plain.namespace, plain.endpoint) == ("pool0", "pool0.prefill.generate")
    operator = parse_config(RouterServiceConfig, endpoint, environ={"DYN_NAMESPACE": "prod-gp-prefill-0"})
    assert (operator.namespace, operator.endpoint) == ("prod-gp-prefill-0", "prod-gp-prefill-0.prefill.generate")
    suffixed = parse_config(RouterServiceConfig, endpoint, environ={"DYN_NAMESPACE_WORKER_SUFFIX": "blue"})
    assert (suffixed.namespace, suffixed.endpoint) == ("pool0", "pool0-blue.prefill.generate")

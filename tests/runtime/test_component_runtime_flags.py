"""`--discovery-backend` / DYN_DISCOVERY_BACKEND and `--event-plane` / DYN_EVENT_PLANE are one
declaration (runtime/settings.py) shared by every component, so every component accepts the same
values. Dynamo's operator injects DYN_DISCOVERY_BACKEND=kubernetes into every pod, workers
included: a worker that refused it would crash-loop in a manifest that runs NVIDIA's image."""

from __future__ import annotations

import pytest

from dynamo.frontend.config import FrontendConfig
from dynamo.mocker.args import MockerArgs
from dynamo.router.service import RouterServiceConfig
from dynamo.runtime.config import from_namespace, parse_config
from dynamo.runtime.settings import DISCOVERY_BACKENDS, EVENT_PLANES, RuntimeSettings
from dynamo.sglang.args import DynamoSglangArgs
from dynamo.sglang.args import build_parser as sglang_parser
from dynamo.trtllm.args import DynamoTrtllmArgs
from dynamo.vllm.args import DynamoVllmArgs
from dynamo.vllm.args import build_parser as vllm_parser

ROUTER_ARGV = ["--endpoint", "dynamo.backend.generate"]
# (config class, argv it needs, parser): the engine workers' parsers also carry the engine's flags.
COMPONENTS = {
    "frontend": (FrontendConfig, [], None),
    "router": (RouterServiceConfig, ROUTER_ARGV, None),
    "mocker": (MockerArgs, [], None),
    "trtllm": (DynamoTrtllmArgs, [], None),
    "vllm": (DynamoVllmArgs, [], lambda: vllm_parser(use_vllm=False)),
    "sglang": (DynamoSglangArgs, [], lambda: sglang_parser(use_sglang=False)),
}


def parsed(name: str, argv: list[str], environ: dict[str, str]):
    cls, base, parser = COMPONENTS[name]
    if parser is None:
        return parse_config(cls, base + argv, environ=environ)
    return from_namespace(cls, parser().parse_known_args(base + argv)[0], environ)


@pytest.mark.parametrize("name", sorted(COMPONENTS))
@pytest.mark.parametrize("backend", DISCOVERY_BACKENDS)
def test_every_component_takes_every_discovery_backend_from_the_environment(name, backend):
    assert parsed(name, [], {"DYN_DISCOVERY_BACKEND": backend}).discovery_backend == backend


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_the_operators_kubernetes_value_is_accepted_as_a_flag_too(name):
    config = parsed(name, ["--discovery-backend", "kubernetes"], {"DYN_DISCOVERY_BACKEND": "file"})
    assert config.discovery_backend == "kubernetes"  # flag over env


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_an_unknown_backend_is_refused_naming_the_variable(name):
    with pytest.raises(SystemExit) as exc:
        parsed(name, [], {"DYN_DISCOVERY_BACKEND": "zookeeper"})
    assert "DYN_DISCOVERY_BACKEND" in str(exc.value.code) and "kubernetes" in str(exc.value.code)


@pytest.mark.parametrize("name", sorted(COMPONENTS))
@pytest.mark.parametrize("plane", EVENT_PLANES)
def test_every_component_takes_the_same_event_planes(name, plane):
    assert parsed(name, [], {"DYN_EVENT_PLANE": plane}).event_plane == plane
    assert parsed(name, ["--event-plane", plane], {}).event_plane == plane


def test_the_process_settings_use_the_same_declaration():
    assert RuntimeSettings.from_env({"DYN_DISCOVERY_BACKEND": "kubernetes"}).discovery_backend == "kubernetes"
    with pytest.raises(SystemExit) as exc:
        RuntimeSettings.from_env({"DYN_EVENT_PLANE": "kafka"})
    assert "DYN_EVENT_PLANE" in str(exc.value.code)

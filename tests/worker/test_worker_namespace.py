"""Where every worker registers (NVIDIA Dynamo's `get_worker_namespace`, dynamo/common/utils/namespace.py):
DYN_NAMESPACE (or --namespace) with DYN_NAMESPACE_WORKER_SUFFIX appended as '{namespace}-{suffix}', nothing
appended for an empty suffix, and an explicit --endpoint taken as written; the same on each worker's command
line, through the spec the harness serves (`WorkerSpec`), as the standalone router resolves its workers."""

from __future__ import annotations

import pytest

from dynamo.mocker.__main__ import worker_spec as mocker_spec
from dynamo.mocker.compat_flags import parse_mocker_args
from dynamo.router.service import RouterServiceConfig
from dynamo.runtime.config import parse_config
from dynamo.sglang.args import parse_split as sglang_split
from dynamo.trtllm.args import parse_worker_args as trtllm_parse
from dynamo.vllm.args import parse_split as vllm_split
from dynamo.worker.engine_args import worker_namespace
from dynamo.worker.harness import WorkerSpec
from dynamo.worker.role import WorkerRole

# Each worker's command line -> the spec its harness serves.
SPECS = {
    "vllm": lambda argv: WorkerSpec.of(vllm_split(["--model", "m", *argv], use_vllm=False)[0], WorkerRole.AGG),
    "sglang": lambda argv: WorkerSpec.of(sglang_split(["--model-path", "m", *argv], use_sglang=False)[0],
                                         WorkerRole.AGG),
    "trtllm": lambda argv: WorkerSpec.of(trtllm_parse(["--model", "/m", *argv])[0], WorkerRole.AGG),
    "mocker": lambda argv: mocker_spec(parse_mocker_args(["--model-path", "m", *argv])[0]),
}


def test_the_suffix_is_appended_as_dynamo_does():
    assert worker_namespace("default-mocker-agg", "abc123") == "default-mocker-agg-abc123"
    assert worker_namespace("dynamo", "") == worker_namespace("dynamo", None) == "dynamo"


@pytest.mark.parametrize("worker", sorted(SPECS))
def test_every_worker_registers_in_the_suffixed_namespace(worker, monkeypatch):
    monkeypatch.setenv("DYN_NAMESPACE", "default-mocker-agg")
    assert SPECS[worker]([]).endpoint_path() == "dyn://default-mocker-agg.backend.generate"
    monkeypatch.setenv("DYN_NAMESPACE_WORKER_SUFFIX", "abc123")
    spec = SPECS[worker]([])
    assert (spec.namespace, spec.endpoint_path()) == \
        ("default-mocker-agg-abc123", "dyn://default-mocker-agg-abc123.backend.generate")
    assert SPECS[worker](["--namespace", "flag"]).namespace == "flag-abc123"  # the flag's namespace, suffixed
    # An explicit endpoint is taken as written, as Dynamo's workers take it.
    assert SPECS[worker](["--endpoint", "dyn://own.backend.generate"]).endpoint_path() == "dyn://own.backend.generate"
    monkeypatch.setenv("DYN_NAMESPACE_WORKER_SUFFIX", "")  # a manifest's empty value: no suffix
    assert SPECS[worker]([]).namespace == "default-mocker-agg"


@pytest.mark.parametrize("worker", sorted(SPECS))
def test_workers_and_the_router_given_one_suffix_meet(worker, monkeypatch):
    monkeypatch.setenv("DYN_NAMESPACE", "default-mocker-agg")
    monkeypatch.setenv("DYN_NAMESPACE_WORKER_SUFFIX", "abc123")
    router = parse_config(RouterServiceConfig, ["--endpoint", "default-mocker-agg.backend.generate"])
    assert SPECS[worker]([]).endpoint_path() == f"dyn://{router.endpoint}"

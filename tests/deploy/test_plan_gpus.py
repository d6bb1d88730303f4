"""How `run` hands out this machine's GPUs (dynamo/deploy/README.md, "GPUs"): each replica of a
service asking for `resources.limits.gpu` gets its own devices in CUDA_VISIBLE_DEVICES, in
service order, shared only when every device is taken (scale-ups included), given back on
scale-down; a service without GPUs gets ""; with no devices the variable is left as this shell
has it."""

from __future__ import annotations

from pathlib import Path

import yaml

from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.validate import validate_file

CUDA = "CUDA_VISIBLE_DEVICES"


def manifest(services: dict[str, tuple[int, int]]) -> dict:
    """A graph of `python3 -c pass` services: name -> (GPUs per replica, replicas)."""
    specs = {}
    for name, (gpus, replicas) in services.items():
        spec = {"componentType": "worker", "replicas": replicas,
                "extraPodSpec": {"mainContainer": {"image": "local", "command": ["python3", "-c", "pass"]}}}
        if gpus:
            spec["resources"] = {"limits": {"gpu": str(gpus)}}
        specs[name] = spec
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
            "metadata": {"name": "gpus"}, "spec": {"services": specs}}


def visible(tmp_path: Path, services: dict[str, tuple[int, int]], devices: list[str],
            environ: dict[str, str] | None = None, overrides: dict[str, int] | None = None) -> dict[str, list]:
    """service -> each replica's CUDA_VISIBLE_DEVICES (None: not set), as `run` would launch it."""
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(manifest(services), sort_keys=False))
    (graph,) = validate_file(path).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), environ=environ or {"PATH": "/usr/bin"})
    plans = build_plans(graph, opts, overrides or {}, devices=devices)
    return {name: [plan.launch(i).env.get(CUDA) for i in range(plan.replicas)] for name, plan in plans.items()}


def test_each_gpu_replica_gets_its_own_devices_in_service_order(tmp_path):
    # A GPU-less service between two GPU services takes no device.
    got = visible(tmp_path, {"Prefill": (1, 2), "Frontend": (0, 1), "Decode": (2, 2)},
                  [str(i) for i in range(8)])
    assert got == {"Prefill": ["0", "1"], "Frontend": [""], "Decode": ["2,3", "4,5"]}
    slices = [s.split(",") for s in got["Prefill"] + got["Decode"]]
    assert len({d for s in slices for d in s}) == sum(map(len, slices))  # no device handed out twice


def test_device_ids_are_the_detected_ones_not_positions(tmp_path):
    got = visible(tmp_path, {"Worker": (2, 2)}, ["3", "5", "6", "7"])
    assert got == {"Worker": ["3,5", "6,7"]}


def test_replica_count_from_set_counts_when_handing_out(tmp_path):
    got = visible(tmp_path, {"Prefill": (1, 1), "Decode": (1, 1)}, ["0", "1", "2", "3", "4"],
                  overrides={"Prefill": 3})
    assert got == {"Prefill": ["0", "1", "2"], "Decode": ["3"]}


def test_a_restarted_replica_keeps_its_devices(tmp_path):
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(manifest({"A": (1, 2), "B": (1, 2)})))
    (graph,) = validate_file(path).graphs
    plans = build_plans(graph, RunOptions(state_dir=str(tmp_path / "state"), environ={}), {},
                        devices=["0", "1", "2", "3"])
    first = plans["B"].launch(1).env[CUDA]
    assert first == "3" and plans["B"].launch(1).env[CUDA] == first


def test_too_few_devices_are_shared_round_robin(tmp_path):
    # Three one-GPU replicas and a fourth in the next service on two devices: 0, 1, 0, 1.
    got = visible(tmp_path, {"A": (1, 3), "B": (1, 1)}, ["0", "1"])
    assert got == {"A": ["0", "1", "0"], "B": ["1"]}
    # Two-GPU replicas on three devices keep cycling: 0,1 then 2,0.
    got = visible(tmp_path, {"A": (2, 2)}, ["0", "1", "2"])
    assert got == {"A": ["0,1", "2,0"]}


def test_a_replica_asking_for_more_than_exist_gets_each_device_once(tmp_path):
    got = visible(tmp_path, {"Big": (4, 1)}, ["0", "1"])
    assert got == {"Big": ["0,1"]}


def test_services_without_gpus_get_an_empty_list_even_if_the_shell_set_one(tmp_path):
    got = visible(tmp_path, {"Frontend": (0, 2), "Worker": (1, 1)}, ["0"],
                  environ={"PATH": "/usr/bin", CUDA: "0"})
    assert got == {"Frontend": ["", ""], "Worker": ["0"]}


def test_without_devices_the_variable_is_left_alone(tmp_path):
    services = {"Frontend": (0, 1), "Worker": (1, 2)}
    assert visible(tmp_path, services, []) == {"Frontend": [None], "Worker": [None, None]}
    got = visible(tmp_path, services, [], environ={"PATH": "/usr/bin", CUDA: "2,3"})
    assert got == {"Frontend": ["2,3"], "Worker": ["2,3", "2,3"]}


def plans_on(tmp_path: Path, services: dict[str, tuple[int, int]], devices: list[str]) -> dict:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(manifest(services)))
    (graph,) = validate_file(path).graphs
    return build_plans(graph, RunOptions(state_dir=str(tmp_path / "state"), environ={}), {}, devices=devices)


def test_a_replica_added_by_scaling_takes_a_free_device(tmp_path):
    # A and B hold 0 and 1 at start; A's second replica (the planner scaled it) gets 2, not B's 1.
    plans = plans_on(tmp_path, {"A": (1, 1), "B": (1, 1)}, ["0", "1", "2", "3"])
    plans["A"].replicas = 2
    assert plans["A"].launch(1).env[CUDA] == "2"
    plans["B"].replicas = 2
    assert plans["B"].launch(1).env[CUDA] == "3"
    plans["A"].replicas = 3  # every device taken: shared, with the least held first
    assert plans["A"].launch(2).env[CUDA] == "0"


def test_a_retired_replica_gives_its_devices_back(tmp_path):
    plans = plans_on(tmp_path, {"A": (2, 2), "B": (1, 0)}, ["0", "1", "2", "3", "4"])
    assert [plans["A"].launch(i).env[CUDA] for i in (0, 1)] == ["0,1", "2,3"]
    plans["A"].release(1)  # scaled down to 1
    plans["B"].replicas = 2
    assert [plans["B"].launch(i).env[CUDA] for i in (0, 1)] == ["2", "3"]


def test_the_graphs_of_one_file_share_the_machines_devices(tmp_path):
    """A file of several graphs (`run` on Dynamo's hierarchical layouts): one ledger deals the GPUs across
    them, so two graphs' same-named workers never land on the same device while others are free."""
    from dynamo.deploy.devices import DeviceLedger

    ledger = DeviceLedger(["0", "1", "2"])
    got = {}
    for name in ("pool-a", "pool-b"):
        doc = manifest({"Worker": (1, 1)})
        doc["metadata"]["name"] = name
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        (graph,) = validate_file(path).graphs
        plans = build_plans(graph, RunOptions(state_dir=str(tmp_path / "state"), environ={}), {}, ledger=ledger)
        got[name] = plans["Worker"].launch(0).env[CUDA]
    assert got == {"pool-a": "0", "pool-b": "1"}

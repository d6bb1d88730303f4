"""`run` serves a service's configMap volume mounts from the ConfigMaps defined in the same file: a whole
map at its mountPath, `items` at their paths, a `subPath` mount as the one file, binaryData decoded; and
the global router is given `--model`'s files like the workers (it builds its model cards from them)."""

from __future__ import annotations

import base64
import os

import yaml

from dynamo.deploy import config_maps
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.validate import load_documents, validate_file
from tests.fixtures.procs import REPO

EXAMPLE = REPO / "examples/global_router/hierarchical_mocker.yaml"

GRAPH = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {plan.json: '{"a": 1}', other.txt: hello}
binaryData: {blob.bin: %s}
---
apiVersion: nvidia.com/v1alpha1
kind: DynamoGraphDeployment
metadata: {name: cm}
spec:
  services:
    Worker:
      componentType: worker
      replicas: 1
      extraPodSpec:
        volumes:
          - {name: whole, configMap: {name: settings}}
          - {name: picked, configMap: {name: settings, items: [{key: plan.json, path: conf/p.json}]}}
          - {name: absent, configMap: {name: elsewhere}}
        mainContainer:
          image: img:1
          command: [python3, -m, dynamo.mocker]
          args: [--model-path, /m, --planner-profile-data, /etc/whole/plan.json, --extra-engine-args, /opt/one.json]
          volumeMounts:
            - {name: whole, mountPath: /etc/whole}
            - {name: picked, mountPath: /etc/picked}
            - {name: whole, mountPath: /opt/one.json, subPath: plan.json}
            - {name: absent, mountPath: /etc/absent}
""" % base64.b64encode(b"\x00\x01").decode()


def test_config_map_mounts_as_a_pod_sees_them(tmp_path, caplog):
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH)
    (graph,) = validate_file(path).graphs
    maps = config_maps.collect(load_documents(path))
    assert maps["settings"]["blob.bin"] == b"\x00\x01"
    opts = RunOptions(state_dir=str(tmp_path / "state"), config_maps=maps, environ={})
    plan = build_plans(graph, opts, {}, devices=[])["Worker"]
    whole, picked, one = plan.mounts["/etc/whole"], plan.mounts["/etc/picked"], plan.mounts["/opt/one.json"]
    assert sorted(os.listdir(whole)) == ["blob.bin", "other.txt", "plan.json"]
    assert os.listdir(picked) == ["conf"] and open(os.path.join(picked, "conf/p.json")).read() == '{"a": 1}'
    assert open(one).read() == '{"a": 1}'
    assert "/etc/absent" not in plan.mounts
    assert "ConfigMap 'elsewhere', which this file does not define" in caplog.text
    argv = plan.launch(0).argv
    assert os.path.join(whole, "plan.json") in argv and one in argv  # paths in the command line follow the mounts


def test_the_global_router_gets_the_local_model_and_its_plan(tmp_path, tiny_model):
    graphs = validate_file(EXAMPLE).graphs
    ctrl = next(g for g in graphs if g.metadata.name == "gr-ctrl")
    opts = RunOptions(state_dir=str(tmp_path), model=str(tiny_model), namespace="demo", environ={},
                      config_maps=config_maps.collect(load_documents(EXAMPLE)))
    argv = build_plans(ctrl, opts, {}, devices=[])["GlobalRouter"].launch(0).argv
    assert argv[argv.index("--model-path") + 1] == str(tiny_model)
    assert argv[argv.index("--model-name") + 1] == "Qwen/Qwen3-0.6B"
    plan_file = argv[argv.index("--config") + 1]
    assert plan_file.startswith(str(tmp_path)) and yaml.safe_load(open(plan_file))["num_prefill_pools"] == 2

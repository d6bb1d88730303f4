"""`python -m dynamo.global_planner` refuses what it cannot start with in one line, exit 2, before serving
anything (QA item 6: no kubeconfig gave two chained tracebacks; `--max-total-gpus -3` was accepted). Its
`main` is called as the module runs it, in an environment without any Kubernetes config."""

from __future__ import annotations

import os

import pytest

from dynamo.global_planner.__main__ import main


@pytest.fixture
def no_cluster(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith(("KUBE", "DYN_", "POD_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config; no KUBERNETES_SERVICE_HOST: not in a cluster
    monkeypatch.setenv("DYN_NAMESPACE", "qa-gp")
    monkeypatch.setenv("DYN_DISCOVERY_BACKEND", "file")  # were it to start serving: a store of the test's own
    monkeypatch.setenv("DYN_FILE_KV", str(tmp_path / "kv"))


def refused(capsys, *flags: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(flags))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [x for x in err.splitlines() if "error:" in x]
    return line


def test_no_kubernetes_config_is_one_line_exit_2(no_cluster, capsys):
    line = refused(capsys, "--managed-namespaces", "A", "B", "--max-total-gpus", "8", "--no-operation")
    assert "error: no Kubernetes cluster config (Invalid kube-config file. No configuration found.)" in line
    assert "--kubeconfig" in line and "DYN_DEPLOY_CONTROL_URLS" in line


def test_a_negative_gpu_budget_is_refused_naming_the_flag(no_cluster, capsys):
    line = refused(capsys, "--max-total-gpus", "-3")
    assert "error: --max-total-gpus must be >= 0, or -1 for no budget: -3" in line

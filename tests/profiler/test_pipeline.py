"""The request's flow around a frozen profile: a changed spec is refused without touching the profile
or its status, so the original request still reuses it."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from dynamo.profiler import dgdr
from dynamo.profiler.dgd import Choice, WorkerChoice, final_documents
from dynamo.profiler.pipeline import FINAL, Options, run
from dynamo.profiler.status import STATUS_FILE, SpecChanged, Status

AGG = Choice("agg", [WorkerChoice("agg", 1)], "memory-fit")


def request(ttft: float) -> dgdr.Request:
    return dgdr.parse({"metadata": {"name": "r1"}, "spec": {
        "model": "Qwen/Qwen3-0.6B", "backend": "vllm", "autoApply": False,
        "workload": {"isl": 300, "osl": 30}, "sla": {"ttft": ttft, "itl": 20}}})


def profiled(out, req: dgdr.Request) -> None:
    """A finished profile of `req` in `out`, as a run leaves it (status Ready, the v1beta1 DGD written)."""
    (out / FINAL).parent.mkdir(parents=True, exist_ok=True)
    (out / FINAL).write_text(yaml.safe_dump_all(final_documents(req, AGG), sort_keys=False))
    Status(out, req.metadata.name, dgdr.spec_digest(req)).set("Ready", "Done", message="profiled",
                                                              modelSource=req.spec.model)


def test_a_refused_spec_change_leaves_the_profile_and_the_original_request_reuses_it(tmp_path, capsys):
    original, changed = request(200), request(250)
    profiled(tmp_path, original)
    before = (tmp_path / STATUS_FILE).read_bytes(), (tmp_path / FINAL).read_bytes()
    with pytest.raises(SpecChanged, match="immutable once profiling starts"):  # the CLI says it (exit 2)
        asyncio.run(run(changed, Options(output_dir=tmp_path)))
    assert "immutable" not in capsys.readouterr().err  # library code prints nothing of it
    assert ((tmp_path / STATUS_FILE).read_bytes(), (tmp_path / FINAL).read_bytes()) == before
    with pytest.raises(SpecChanged):  # a dry run is refused alike
        asyncio.run(run(changed, Options(output_dir=tmp_path, dry_run=True)))
    assert (tmp_path / STATUS_FILE).read_bytes() == before[0]
    capsys.readouterr()
    assert asyncio.run(run(original, Options(output_dir=tmp_path))) == 0
    assert "Ready: reusing" in capsys.readouterr().err
    assert yaml.safe_load((tmp_path / STATUS_FILE).read_text())["phase"] == "Ready"


def test_a_failed_profile_says_why_on_the_console_and_in_the_status_without_class_names(tmp_path, capsys):
    # an override naming a component the graph lacks fails the profile (before any candidate is deployed)
    req = dgdr.parse({"metadata": {"name": "r2"}, "spec": {
        "model": "Qwen/Qwen3-0.6B", "backend": "vllm", "searchStrategy": "thorough", "autoApply": False,
        "features": {"mocker": {"enabled": True}},
        "overrides": {"dgd": {"spec": {"services": {"NoSuchWorker": {"replicas": 3}}}}}}})
    assert asyncio.run(run(req, Options(output_dir=tmp_path))) == 1
    status = yaml.safe_load((tmp_path / STATUS_FILE).read_text())
    why = "spec.overrides.dgd: component 'NoSuchWorker' is not in the generated DGD"
    assert status["phase"] == "Failed" and status["message"].startswith(why) and status["error"].startswith(why)
    assert "Error" not in status["message"]  # no `ValueError: ...`
    assert f"[dgdr r2] Failed: {why}" in capsys.readouterr().err


def test_with_autoapply_false_run_names_every_flag_that_went_unused_ports_included(tmp_path, caplog, capsys):
    req = request(200)
    profiled(tmp_path, req)
    opts = Options(output_dir=tmp_path, caller="run", frontend_port=19552, control_port=19553,
                   run_flags=["--log-dir", "/tmp/logs"])
    assert asyncio.run(run(req, opts)) == 0
    unused = "--frontend-port 19552 --control-port 19553 --log-dir /tmp/logs"
    assert f"nothing deployed, so {unused} did not apply" in caplog.text
    message = yaml.safe_load((tmp_path / STATUS_FILE).read_text())["message"]
    assert f"run {tmp_path / FINAL} {unused}`" in message  # the command that runs it takes them
    caplog.clear()
    assert asyncio.run(run(req, Options(output_dir=tmp_path, caller="run"))) == 0  # run's own defaults: none
    assert "did not apply" not in caplog.text

"""`--dump-config-to` end to end: a real frontend and a real mocker worker write their start-up
config (the flag on one, DYN_DUMP_CONFIG_TO on the other) and go on serving; the files show
flag > env > default and the runtime settings from their environment. Two workers given one
directory write a file each. A path that cannot be
written stops a real process at start-up with a message naming it, not a traceback."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures.procs import Cluster, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


def read(path) -> dict:
    return json.loads(path.read_text())


def test_frontend_and_mocker_dump_their_effective_config_and_serve(tiny_model, tmp_path):
    fe_dump, worker_dump = tmp_path / "dumps" / "frontend.json", tmp_path / "dumps" / "mocker.json"
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        worker = c.mocker("--dump-config-to", str(worker_dump), "--block-size", "16",
                          env={"DYN_SPEEDUP_RATIO": "7", "DYN_BLOCK_SIZE": "32"})
        # The port flag (added by Cluster.frontend) must win over DYN_HTTP_PORT.
        c.frontend("--router-mode", "kv", env={"DYN_DUMP_CONFIG_TO": str(fe_dump), "DYN_MIGRATION_LIMIT": "2",
                                               "DYN_HTTP_PORT": "1", "DYN_ROUTER_MODE": "random"})
        # One directory for two processes (deploy run, or a shell exporting it once): a file each.
        shared = [c.mocker("--block-size", "16", env={"DYN_DUMP_CONFIG_TO": str(tmp_path / "shared") + "/"})
                  for _ in range(2)]  # same card as the first worker
        c.wait_workers(MODEL, 3)
        resp = httpx.post(c.base_url + "/v1/completions", timeout=60,
                          json={"model": MODEL, "prompt": "hello", "max_tokens": 3})
        assert resp.status_code == 200, resp.text  # dumping did not stop either from serving
        frontend, mocker = read(fe_dump), read(worker_dump)
    finally:
        c.stop()
    assert frontend["component"] == "dynamo.frontend" and frontend["config_type"] == "FrontendConfig"
    fc = frontend["config"]
    assert (fc["http_port"], fc["router_mode"], fc["migration_limit"]) == (c.http_port, "kv", 2)  # flag, flag, env
    assert fc["dump_config_to"] == str(fe_dump) and fc["first_token_timeout_secs"] is None  # env, default
    assert "--router-mode" in frontend["argv"]
    assert mocker["component"] == "dynamo.mocker" and "--dump-config-to" in mocker["argv"]
    mc = mocker["config"]
    assert (mc["block_size"], mc["speedup_ratio"], mc["model_name"]) == (16, 7.0, MODEL)  # flag > env, env, flag
    assert mc["num_gpu_blocks_override"] == 16384  # default
    for dump in (frontend, mocker):  # each process's own runtime settings, from the Cluster's environment
        assert dump["runtime_settings"]["file_kv"] == str(tmp_path / "kv")
        assert dump["runtime_settings"]["log"] == "info"
    assert mocker["runtime_settings"]["system_port"] == worker.system_port
    files = {proc.pid: tmp_path / "shared" / f"dynamo.mocker-{proc.pid}.json" for proc in shared}
    assert sorted((tmp_path / "shared").iterdir()) == sorted(files.values())
    assert all(read(path)["pid"] == pid for pid, path in files.items())


def test_an_unwritable_dump_path_stops_start_up_with_a_message(tiny_model, tmp_path):
    (tmp_path / "a-file").write_text("x")
    bad = tmp_path / "a-file" / "cfg.json"
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        procs = [c.start("dynamo.frontend", ["--http-port", "0", "--dump-config-to", str(bad)], name="fe-bad"),
                 c.mocker(env={"DYN_DUMP_CONFIG_TO": str(bad)})]
        for proc in procs:
            wait_until(lambda p=proc: not p.alive(), 120, f"{proc.name} to exit")
            assert proc.popen.returncode != 0
            log = proc.log()
            assert f"--dump-config-to {bad}: cannot write" in log and "Traceback" not in log, log
    finally:
        c.stop()

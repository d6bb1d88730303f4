"""`--dump-config-to`: the start-up dump's content (header, every field after flag > env >
default, the runtime settings, redaction), its failure mode (a SystemExit naming the path,
never a traceback), and the flag on every component's CLI with its DYN_DUMP_CONFIG_TO twin."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

import pytest

import dynamo
from dynamo.frontend.config import FrontendConfig
from dynamo.mocker.args import MockerArgs
from dynamo.router.service import RouterServiceConfig
from dynamo.runtime.config import REDACTED, build_parser, dump_config, parse_config, setting
from dynamo.runtime.config_dump import DumpConfigTo, config_record, dump_file, write_config_dump
from dynamo.trtllm.args import DynamoTrtllmArgs


@dataclass
class Sample(DumpConfigTo):
    port: int = setting(8000, "port")
    name: str | None = setting(None, "name", env="CUSTOM_NAME")
    fast: bool = setting(False, "fast")
    token: str | None = setting(None, "a credential", secret=True)


@dataclass
class Engine:  # stands in for an engine's own argument dataclass (no `secret` marks)
    model: str = "m"
    hf_token: str | None = None


def read(path) -> dict:
    return json.loads(path.read_text())


def test_the_dump_holds_every_field_after_flag_env_default(tmp_path):
    target = tmp_path / "cfg.json"
    config = parse_config(Sample, ["--port", "7", "--dump-config-to", str(target)],
                          environ={"DYN_PORT": "9", "CUSTOM_NAME": "from-env"})
    assert write_config_dump(config, "dynamo.sample") == target
    dump = read(target)
    assert dump["config"] == {"dump_config_to": str(target), "port": 7, "name": "from-env", "fast": False,
                              "token": None}  # flag > env, env > default, default
    assert dump["component"] == "dynamo.sample" and dump["config_type"] == "Sample"
    assert dump["dynamo_version"] == dynamo.__version__
    assert isinstance(dump["argv"], list) and isinstance(dump["pid"], int)


def test_the_dump_includes_the_runtime_settings_of_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DYN_EVENT_PLANE_HOST", "10.1.2.3")
    monkeypatch.setenv("DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS", "42")
    write_config_dump(Sample(), "dynamo.sample", path=str(tmp_path / "cfg.json"))
    runtime = read(tmp_path / "cfg.json")["runtime_settings"]
    assert runtime["event_plane_host"] == "10.1.2.3"
    assert runtime["graceful_shutdown_grace_period_secs"] == 42.0
    assert runtime["tcp_connect_timeout"] == 3.0  # a default: every field is there


def test_passwords_in_endpoint_urls_are_redacted_hosts_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("NATS_SERVER", "nats://app:s3cret@nats.example:4222")
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://root:pw1@etcd-0:2379,http://etcd-1:2379")
    write_config_dump(Sample(), "dynamo.sample", path=str(tmp_path / "cfg.json"))
    text = (tmp_path / "cfg.json").read_text()
    assert "s3cret" not in text and "pw1" not in text
    runtime = read(tmp_path / "cfg.json")["runtime_settings"]
    assert runtime["nats_server"] == "nats://app:<redacted>@nats.example:4222"
    assert runtime["etcd_endpoints"] == "http://root:<redacted>@etcd-0:2379,http://etcd-1:2379"


def test_secret_fields_and_named_engine_fields_are_redacted_when_set(tmp_path):
    record = config_record(Sample(token="s3cr3t"), "dynamo.sample",
                           sections={"engine_args": Engine(hf_token="hf_abc"),
                                     "server_args": argparse.Namespace(api_key="k", port=1)},
                           redact=("hf_token", "api_key"))
    assert record["config"]["token"] == REDACTED
    assert record["engine_args"] == {"model": "m", "hf_token": REDACTED}
    assert record["server_args"] == {"api_key": REDACTED, "port": 1}
    assert "s3cr3t" not in json.dumps(record) and "s3cr3t" not in dump_config(Sample(token="s3cr3t"))
    # Unset stays visible as unset: the dump tells "no token" from "a token".
    assert config_record(Sample(), "x", sections={"e": Engine()}, redact=("hf_token",))["e"]["hf_token"] is None


def test_passwords_in_urls_inside_engine_sections_are_redacted(tmp_path):
    """Engine arguments are not ours (no `secret` marks): a URL with a password anywhere in them,
    nested or in a list, is still hidden, the host kept."""
    engine = argparse.Namespace(kv_events_config={"endpoint": "tcp://u:pw2@kv:5557"},
                                hosts=["redis://:pw3@cache:6379", "plain"], port=1)
    record = config_record(Sample(), "dynamo.sample", sections={"engine_args": engine,
                                                                "plain": {"url": "nats://a:pw4@n:4222"}})
    assert "pw2" not in json.dumps(record) and "pw3" not in json.dumps(record) and "pw4" not in json.dumps(record)
    assert record["engine_args"]["kv_events_config"] == {"endpoint": f"tcp://u:{REDACTED}@kv:5557"}
    assert record["engine_args"]["hosts"] == [f"redis://:{REDACTED}@cache:6379", "plain"]
    assert record["plain"] == {"url": f"nats://a:{REDACTED}@n:4222"}


def test_the_planner_dumps_its_args_and_its_loaded_config(tmp_path, monkeypatch):
    import dynamo.planner.__main__ as planner

    monkeypatch.setattr(planner, "run_main", lambda *_: 0)
    config = {"environment": "local", "backend": "mocker", "prometheus_endpoint": "http://u:pw5@prom:9090"}
    assert planner.main(["--config", json.dumps(config), "--dump-config-to", str(tmp_path / "p.json")]) == 0
    dump = read(tmp_path / "p.json")
    assert dump["component"] == "dynamo.planner" and dump["config_type"] == "PlannerArgs"
    assert dump["planner_config"]["environment"] == "local" and dump["planner_config"]["backend"] == "mocker"
    assert dump["planner_config"]["prometheus_endpoint"] == f"http://u:{REDACTED}@prom:9090"


def test_the_profiler_dumps_its_args(tmp_path, monkeypatch):
    import dynamo.profiler.__main__ as profiler

    (tmp_path / "dgdr.yaml").write_text("model: Qwen/Qwen3-0.6B\n")
    monkeypatch.setenv("DYN_DUMP_CONFIG_TO", str(tmp_path / "prof.json"))
    assert profiler.main(["--config", str(tmp_path / "dgdr.yaml"), "--dry-run",
                          "--output-dir", str(tmp_path / "out")]) == 0
    dump = read(tmp_path / "prof.json")
    assert dump["component"] == "dynamo.profiler" and dump["config"]["dry_run"] is True
    assert dump["config"]["output_dir"] == str(tmp_path / "out")


def test_nothing_is_written_without_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert write_config_dump(Sample(), "dynamo.sample") is None
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_directories_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "cfg.json"
    write_config_dump(Sample(dump_config_to=str(target)), "dynamo.sample")
    assert read(target)["config"]["port"] == 8000


@pytest.mark.parametrize("given", ["existing", "trailing_slash"])
def test_a_directory_gets_one_file_per_component_and_process(tmp_path, given):
    """Several processes handed the same DYN_DUMP_CONFIG_TO directory must not overwrite each other."""
    folder = tmp_path / "dumps"
    if given == "existing":
        folder.mkdir()
    path = str(folder) if given == "existing" else str(folder) + "/"
    frontend = write_config_dump(Sample(port=1, dump_config_to=path), "dynamo.frontend")
    mocker = write_config_dump(Sample(port=2), "dynamo.mocker", path=path)
    pid = os.getpid()
    assert (frontend, mocker) == (folder / f"dynamo.frontend-{pid}.json", folder / f"dynamo.mocker-{pid}.json")
    assert sorted(p.name for p in folder.iterdir()) == [frontend.name, mocker.name]
    assert (read(frontend)["config"]["port"], read(mocker)["config"]["port"]) == (1, 2)
    assert read(mocker)["pid"] == pid


def test_a_file_path_is_used_as_given():
    assert dump_file("/x/cfg.json", "dynamo.mocker", pid=7) == "/x/cfg.json"
    assert dump_file("/x/dumps/", "dynamo.mocker", pid=7) == "/x/dumps/dynamo.mocker-7.json"


@pytest.mark.parametrize("where", ["under_a_file", "a_directory_under_a_file"])
def test_an_unwritable_path_is_a_clear_exit_naming_it(tmp_path, where):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    target = blocker / "cfg.json" if where == "under_a_file" else str(blocker / "dumps") + "/"
    with pytest.raises(SystemExit) as exc:
        write_config_dump(Sample(dump_config_to=str(target)), "dynamo.sample")
    assert isinstance(exc.value.code, str) and str(target).rstrip("/") in exc.value.code
    assert "cannot write" in exc.value.code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain-file"]  # no temporary file left behind


# The frontend's entry point is covered by a real process in tests/e2e/test_config_dump.py
# (importing it here would run `ldconfig` through runtime/memory.py, a process in a unit test).
@pytest.mark.parametrize("main, argv", [
    ("dynamo.router.__main__", ["--endpoint", "dynamo.backend.generate"]),
    ("dynamo.mocker.__main__", []),
])
def test_a_component_refuses_to_start_on_an_unwritable_path(tmp_path, main, argv, monkeypatch):
    """The entry point exits before serving (run_main is never reached), with the message."""
    import importlib

    module = importlib.import_module(main)
    monkeypatch.setattr(module, "run_main", lambda *_: pytest.fail("started serving"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as exc:
        module.main([*argv, "--dump-config-to", str(tmp_path / "f" / "cfg.json")])
    assert str(tmp_path / "f" / "cfg.json") in str(exc.value.code)


def _help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())  # argparse wraps lines anywhere


def _component_parsers() -> dict[str, argparse.ArgumentParser]:
    from dynamo.sglang.args import build_parser as sglang_parser
    from dynamo.vllm.args import build_parser as vllm_parser

    parsers = {cls.__name__: build_parser(cls) for cls in (FrontendConfig, RouterServiceConfig, MockerArgs,
                                                           DynamoTrtllmArgs)}
    from dynamo.planner.__main__ import build_parser as planner_parser
    from dynamo.profiler.__main__ import ProfilerArgs

    parsers["planner"] = planner_parser()
    parsers["ProfilerArgs"] = build_parser(ProfilerArgs)
    parsers["vllm"] = vllm_parser(use_vllm=False)
    parsers["sglang"] = sglang_parser(use_sglang=False)
    return parsers


@pytest.mark.parametrize("name", ["FrontendConfig", "RouterServiceConfig", "MockerArgs", "DynamoTrtllmArgs",
                                  "vllm", "sglang", "planner", "ProfilerArgs"])
def test_every_component_has_the_flag_and_its_env_twin(name):
    text = _help(_component_parsers()[name])
    assert "--dump-config-to PATH" in text and "[env DYN_DUMP_CONFIG_TO]" in text


@pytest.mark.parametrize("cls", [FrontendConfig, MockerArgs, DynamoTrtllmArgs])
def test_the_env_twin_sets_the_path_and_the_flag_wins(cls):
    assert parse_config(cls, [], environ={"DYN_DUMP_CONFIG_TO": "/e.json"}).dump_config_to == "/e.json"
    flagged = parse_config(cls, ["--dump-config-to", "/f.json"], environ={"DYN_DUMP_CONFIG_TO": "/e.json"})
    assert flagged.dump_config_to == "/f.json"

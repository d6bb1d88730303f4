"""`run --log-dir` with `--log-max-mb` / `--log-backups`: a chatty replica (a real process printing numbered
lines) under a supervisor with a tiny size limit: its file rotates to .1, .2, ...; no more than the
backups are kept; every file holds whole lines in the order they were written, and the kept files
together are one unbroken run of numbers ending at the last line printed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from dynamo.deploy.__main__ import build_parser
from dynamo.deploy.log_files import LogRotation, RotatingLog
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.run import log_rotation
from dynamo.deploy.supervisor import Supervisor
from dynamo.deploy.validate import validate_file
from tests.deploy.manifests import one_service_graph

pytestmark = pytest.mark.timeout(120)
LINES = 3000
CHATTY = one_service_graph("chatty", ["python3", "-c"], args=[
    f"import time\nfor i in range({LINES}): print(f'line {{i:06d}} ' + 'x' * 40)\ntime.sleep(600)"])


def numbers(path: Path) -> list[int]:
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", f"{path.name} ends inside a line"
    return [int(line.split()[1]) for line in lines[:-1]]


def test_a_rotating_log_keeps_whole_lines_in_order_and_drops_the_oldest(tmp_path):
    path = tmp_path / "r.log"
    log = RotatingLog(str(path), LogRotation(max_bytes=100, backups=2))
    for i in range(40):
        log.write(f"line {i:03d} {'y' * 20}\n".encode())
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.log", "r.log.1", "r.log.2"]
    kept = numbers(tmp_path / "r.log.2") + numbers(tmp_path / "r.log.1") + numbers(path)
    assert kept == list(range(kept[0], 40)) and kept[0] > 0
    assert all(p.stat().st_size < 100 + 30 for p in tmp_path.iterdir())


def test_no_rotation_at_zero_and_the_flags(tmp_path):
    log = RotatingLog(str(tmp_path / "r.log"), LogRotation(max_bytes=0, backups=2))
    for _ in range(100):
        log.write(b"z" * 100 + b"\n")
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["r.log"]
    args = build_parser().parse_args(["run", "g.yaml", "--log-dir", "d", "--log-max-mb", "0.5", "--log-backups", "1"])
    assert log_rotation(args) == LogRotation(max_bytes=512 * 1024, backups=1)
    assert log_rotation(build_parser().parse_args(["run", "g.yaml"])) == LogRotation(100 * 1024 * 1024, 3)


@pytest.mark.parametrize("flag,value", [("--log-max-mb", "-1"), ("--log-backups", "-1"), ("--log-backups", "x"),
                                        ("--progress-deadline", "0"), ("--progress-deadline", "-5")])
def test_a_bad_number_is_a_usage_error_not_a_default(flag, value, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "g.yaml", flag, value])
    assert exited.value.code == 2 and flag in capsys.readouterr().err


def test_a_log_that_cannot_be_rotated_or_written_never_stops_the_output(tmp_path, caplog):
    """The pump writes every line of the replica here: an OSError escaping would end it, and the replica would
    then block on a full pipe."""
    path = tmp_path / "r.log"
    log = RotatingLog(str(path), LogRotation(max_bytes=100, backups=1))
    (tmp_path / "r.log.1").mkdir()  # the rotation's rename onto it fails
    for i in range(20):
        log.write(f"line {i:06d} {'x' * 40}\n".encode())
    assert sum("cannot" in r.getMessage() for r in caplog.records) == 1  # said once
    (tmp_path / "r.log.1").rmdir()
    log.write(b"line 999999 back")  # a last line without its newline, once the file works again
    log.close()
    kept = (tmp_path / "r.log.1").read_bytes()  # the unrotated file took it and was rotated at last
    assert kept.endswith(b"line 999999 back\n") and kept.startswith(b"line 000000") and path.read_bytes() == b""
    gone = tmp_path / "gone"
    gone.mkdir()
    log = RotatingLog(str(gone / "r.log"), LogRotation(max_bytes=100, backups=1))
    (gone / "r.log").unlink()
    gone.rmdir()  # its directory removed under it: the rotation cannot reopen the file
    for _ in range(20):
        log.write(b"y" * 60 + b"\n")
    log.close()


@pytest.mark.e2e
async def test_a_chatty_replicas_log_rotates(tmp_path):
    manifest = tmp_path / "chatty.yaml"
    manifest.write_text(yaml.safe_dump(CHATTY))
    (graph,) = validate_file(manifest).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), pods_dir=str(tmp_path / "pods"))
    logs = tmp_path / "logs"
    logs.mkdir()
    sup = Supervisor(build_plans(graph, opts, {}, devices=[]), out=open("/dev/null", "w"), log_dir=str(logs),
                     grace=2.0, log_rotation=LogRotation(max_bytes=16 * 1024, backups=3))
    stop = asyncio.Event()
    runner = asyncio.create_task(sup.run(stop))
    current = logs / "Worker-0.log"
    try:
        deadline = time.monotonic() + 60
        while not (current.exists() and current.stat().st_size and numbers(current)[-1] == LINES - 1):
            assert time.monotonic() < deadline, "the replica's last line never reached its log"
            assert not runner.done()
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
    assert sorted(p.name for p in logs.iterdir()) == ["Worker-0.log", "Worker-0.log.1", "Worker-0.log.2",
                                                      "Worker-0.log.3"]
    kept = [n for name in ("Worker-0.log.3", "Worker-0.log.2", "Worker-0.log.1", "Worker-0.log")
            for n in numbers(logs / name)]
    assert kept == list(range(kept[0], LINES)) and kept[0] > 0, "lines lost or reordered across the kept files"
    line = len(f"line {0:06d} " + "x" * 40 + "\n")
    assert all(p.stat().st_size < 16 * 1024 + line for p in logs.iterdir())

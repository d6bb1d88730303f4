"""Suite-wide rules and shared fixtures.

Markers (registered in pyproject.toml, `--strict-markers`):
- `e2e`: the test starts real processes (workers, frontends, etcd, NATS, scripts). Besides
  the module-level `pytestmark`, a test is marked automatically when its module holds one of
  the process classes (`PROCESS_NAMES`) or it uses the etcd/NATS/vLLM fixtures. A test
  without the mark that starts a process anyway fails (the `pytest_runtest_protocol` guard),
  so `pytest -m "not e2e"` never starts one.
- `vllm`: needs the vLLM CPU venv (added to every test using its `vllm_python` fixture).
- `slow`: a long test (end to end, or pure but seconds-to-minutes, e.g. tokenizer training).

Under CI (env `CI` set, `.ci/run` exports it) any skip or xfail is a failure: a test
that cannot run there is a broken install, not a pass. Locally, a missing optional venv
or binary still skips (and `-rsx` lists it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.ci import in_ci

# The process classes a module uses (a bare `subprocess` call needs its own mark: the guard says so).
PROCESS_NAMES = {"Cluster", "Proc", "VllmCluster", "VenvProc", "EtcdServer", "DeployRun"}
PROCESS_FIXTURES = {"etcd_server", "nats_server", "vllm_python", "vllm_model"}


# Nothing under test may reach a model hub: this machine (and CI) has no network beyond package
# registries, and a lookup for an unknown model id must fail at once, not try a remote host.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_MODEL = Path(__file__).resolve().parent / "fixtures" / "tiny-model"


def copy_tiny_model(dest: Path) -> Path:
    """The tokenizer/config-only tiny model shipped in tests/fixtures/tiny-model (what
    `python -m dynamo.llm.tiny_model --no-weights` builds; shipped so every host tests the
    same bytes and no test trains a tokenizer), copied so a test may write next to it."""
    if not (dest / "tokenizer.json").is_file():
        shutil.copytree(TINY_MODEL, dest, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session", autouse=True)
def engine_sockets_under_the_session_tmp(tmp_path_factory) -> None:
    """vLLM names its engine's IPC sockets under VLLM_RPC_BASE_PATH (default: the system temp dir),
    and an engine a test kills cannot remove them: they go where pytest clears old sessions away,
    not into /tmp for good. Every process a test starts inherits the variable."""
    os.environ.setdefault("VLLM_RPC_BASE_PATH", str(tmp_path_factory.mktemp("ipc")))


# The variables our components read (RuntimeSettings and its kin); an engine run in the test process
# (vLLM's contract test) sets its own, which are not ours to police.
OWN_VARIABLES = ("DYN_", "NATS_", "ETCD_", "POD_", "KUBERNETES_", "CONTAINER_NAME")


@pytest.fixture(autouse=True)
def no_environment_leaks():
    """A test must leave the variables our processes read as it found them: processes later tests
    start inherit them (a leaked TLS variable once broke every later test's workers)."""
    saved = dict(os.environ)
    yield
    leaked = sorted(k for k in {*saved, *os.environ}
                    if saved.get(k) != os.environ.get(k) and k.startswith(OWN_VARIABLES))
    if leaked:
        for key in leaked:
            if key in saved:
                os.environ[key] = saved[key]
            else:
                os.environ.pop(key, None)
        pytest.fail(f"the test changed environment variables {leaked} (use monkeypatch or isolated_environ)")


@pytest.fixture
def isolated_environ():
    """This process's environment restored after the test, variables the test's code set included
    (`monkeypatch.delenv` of an unset variable records nothing, so it would not undo them)."""
    saved = dict(os.environ)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return copy_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


def _uses_process_helpers(module) -> bool:
    for name, value in list(vars(module).items()):
        if name in PROCESS_NAMES and isinstance(value, type):
            return True
    return False


def pytest_collection_modifyitems(config, items) -> None:
    verdicts: dict[str, bool] = {}
    for item in items:
        module = getattr(item, "module", None)
        key = module.__name__ if module is not None else item.nodeid
        if key not in verdicts:
            verdicts[key] = module is not None and _uses_process_helpers(module)
        if "vllm_python" in item.fixturenames:
            item.add_marker(pytest.mark.vllm)
        if verdicts[key] or PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)


# --- `pytest -m "not e2e"` never starts a process -------------------------------------------

_real_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]


def _refuse(self, args, *rest, **kwargs):
    raise RuntimeError(f"this test starts a process ({args!r}) but is not marked e2e: add "
                       "`pytestmark = pytest.mark.e2e` to its module")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    guard = item.get_closest_marker("e2e") is None
    if guard:
        subprocess.Popen._execute_child = _refuse  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if guard:
            subprocess.Popen._execute_child = _real_execute_child  # type: ignore[attr-defined]


# --- CI: no skip, no xfail ---------------------------------------------------------------------

def _ci_failure(report, what: str) -> None:
    reason = getattr(report, "wasxfail", None) or (report.longrepr[-1] if isinstance(report.longrepr, tuple)
                                                   else report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"{what} under CI (env CI is set): {reason}"
    if hasattr(report, "wasxfail"):
        del report.wasxfail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not in_ci():
        return
    if hasattr(report, "wasxfail"):
        _ci_failure(report, "xfail/xpass is not allowed")
    elif report.skipped:
        _ci_failure(report, "skip is not allowed")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        _ci_failure(report, "module-level skip is not allowed")

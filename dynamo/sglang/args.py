"""`python -m dynamo.sglang` arguments: all of SGLang's own server arguments, unchanged,
plus Dynamo's (NVIDIA Dynamo's flag and `DYN_*` env names).

`DynamoSglangArgs` is the single source of the Dynamo-side settings. `build_parser()`
returns one parser holding both: with SGLang importable it is filled by SGLang's own
`ServerArgs.add_cli_args`; without it (the main venv, e.g. `python -m dynamo.deploy
validate`) by the static table in `server_flags.py`, generated from SGLang's parser.
The worker's role is SGLang's own `--disaggregation-mode null|prefill|decode`.

SGLang imports triton at package import; on a machine without it (CPU, the table
generator, CI) `import_server_args()` first installs the triton stub SGLang itself ships
for Apple Silicon (`sglang/_platform_stubs.py`), which is enough for argument parsing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from dynamo.runtime.compat_args import compat_removed, export_runtime_flags
from dynamo.runtime.config import add_arguments, from_namespace, setting
from dynamo.llm.media import MediaSettings
from dynamo.worker.engine_args import (EngineWorkerArgs, check_endpoint, check_limits_and_types, endpoint_types_setting,
                                       migration_limit_setting, migration_limit_warnings, parse_endpoint_types)
from dynamo.worker.compat_flags import MM_TEXT, SGLANG_FLAGS
from dynamo.worker.flag_table import add_static_flags, classify, write_table
from dynamo.worker.role import WorkerRole

# SGLang's own arguments that hold credentials, hidden in `--dump-config-to` files.
SERVER_SECRET_FIELDS = ("api_key", "admin_api_key", "ssl_keyfile_password")


@dataclass
class DynamoSglangArgs(EngineWorkerArgs, MediaSettings):
    """SGLang engine worker: serves a model with SGLang's in-process Engine behind a Dynamo frontend."""

    migration_limit: int = migration_limit_setting()
    engine_request_limit: int = setting(0, "Requests in flight beyond which new ones are refused as overloaded "
                                           "(0: no limit)")
    endpoint_types: str = endpoint_types_setting()
    publish_kv_events: bool = setting(True, "Turn on SGLang's ZMQ KV-event publisher when --kv-events-config is "
                                            "not given, and relay events to the router",
                                      env="DYN_SGLANG_PUBLISH_KV_EVENTS")
    prefill_bootstrap_timeout: float = setting(
        120.0, "Prefill worker: seconds a background prefill may wait for its decode worker to fetch the KV",
        env="DYN_SGLANG_PREFILL_BOOTSTRAP_TIMEOUT")

    def validate(self) -> None:
        self.check_card_args()
        check_endpoint(self.endpoint)
        check_limits_and_types(self.migration_limit, self.engine_request_limit, self.endpoint_types)
        self.media_policy()  # ValueError for a limit that is not positive

    @property
    def model_types(self) -> list[str]:
        return parse_endpoint_types(self.endpoint_types)


def role_of(server_args: Any) -> WorkerRole:
    """SGLang's `--disaggregation-mode` (`null` for aggregated) as our role."""
    mode = getattr(server_args, "disaggregation_mode", None) or "null"
    return WorkerRole.parse("agg" if mode == "null" else mode)


NOT_INSTALLED = ("SGLang is not installed for {python}: install it (`pip install \"sglang[all]\"`, as SGLang's own "
                 "guide says) or run this worker with a Python that has it")


def sglang_available() -> bool:
    return importlib.util.find_spec("sglang") is not None


def install_triton_stub() -> None:
    """SGLang's own Apple-Silicon triton stub, installed where triton is missing."""
    if "triton" in sys.modules or importlib.util.find_spec("triton") is not None:
        return
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        return  # no SGLang: its import, not this stub, says so
    path = os.path.join(list(spec.submodule_search_locations)[0], "_platform_stubs.py")
    loader_spec = importlib.util.spec_from_file_location("_sglang_platform_stubs", path)
    stubs = importlib.util.module_from_spec(loader_spec)
    sys.modules[loader_spec.name] = stubs  # its dataclasses look themselves up here
    loader_spec.loader.exec_module(stubs)
    sys.meta_path.insert(0, stubs._TritonFinder())
    triton = stubs._make_mock("triton")
    triton.__version__, triton.cdiv, triton.next_power_of_2, triton.Config = (
        "3.0.0", stubs._cdiv, stubs._next_power_of_2, stubs._Config)


def import_server_args() -> Any:
    """SGLang's `ServerArgs` class (triton stubbed when absent)."""
    install_triton_stub()
    from sglang.srt.server_args import ServerArgs

    return ServerArgs


def build_parser(prog: str = "python -m dynamo.sglang", use_sglang: bool | None = None) -> argparse.ArgumentParser:
    """SGLang's server flags plus Dynamo's; works with or without SGLang installed."""
    if use_sglang is None:
        use_sglang = sglang_available()
    parser = argparse.ArgumentParser(prog=prog, description=(DynamoSglangArgs.__doc__ or "").strip())
    if use_sglang:
        import_server_args().add_cli_args(parser)
    else:
        from dynamo.sglang import server_flags

        add_static_flags(parser.add_argument_group(
            f"SGLang {server_flags.SGLANG_VERSION} server arguments (static table; SGLang not installed)"),
            server_flags)
    add_arguments(parser.add_argument_group("Dynamo"), DynamoSglangArgs)  # type: ignore[arg-type]
    return parser


def split_namespace(ns: argparse.Namespace) -> tuple[DynamoSglangArgs, argparse.Namespace]:
    """(Dynamo config with env fallbacks applied, the namespace for `ServerArgs.from_cli_args`)."""
    ns = compat_removed(ns)
    config = from_namespace(DynamoSglangArgs, ns)
    ours = {f.name for f in dataclasses.fields(DynamoSglangArgs)}
    return config, argparse.Namespace(**{k: v for k, v in vars(ns).items() if k not in ours})


def parse_args(argv: Sequence[str] | None = None) -> tuple[DynamoSglangArgs, Any, list[str]]:
    """(DynamoSglangArgs, sglang ServerArgs, a warning per NVIDIA Dynamo flag accepted without
    effect). Needs SGLang: without it `--help` and bad flags are answered from the static table,
    and a command line that parses exits 2 with one line saying how to install it."""
    if not sglang_available():
        parser = parse_split(argv, use_sglang=False)[3]
        parser.exit(2, f"{parser.prog}: error: {NOT_INSTALLED.format(python=sys.executable)}\n")
    config, engine_ns, warnings, parser = parse_split(argv, use_sglang=True)
    try:
        server_args = import_server_args().from_cli_args(engine_ns)
        role_of(server_args)
    except ValueError as exc:
        parser.error(str(exc))
    return config, server_args, warnings


def parse_split(argv: Sequence[str] | None = None, use_sglang: bool | None = None
                ) -> tuple[DynamoSglangArgs, argparse.Namespace, list[str], argparse.ArgumentParser]:
    """The command line checked and split: (Dynamo's settings, validated; SGLang's namespace; the
    warnings of `SGLANG_FLAGS`; the parser, for later errors). Exits 2 on a bad or refused flag."""
    parser = build_parser(use_sglang=use_sglang)
    SGLANG_FLAGS.add_to(parser)
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    warnings = SGLANG_FLAGS.check(ns, parser.error)
    # SGLang's own flag (so not in SGLANG_FLAGS): an aggregated worker reads the requests' images with it
    if getattr(ns, "enable_multimodal", False) and getattr(ns, "disaggregation_mode", "null") in ("prefill", "decode"):
        warnings.append(f"--enable-multimodal: images are read by aggregated workers only; {MM_TEXT}")
    export_runtime_flags(ns)
    config, engine_ns = split_namespace(ns)
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    return config, engine_ns, warnings + migration_limit_warnings(config.migration_limit), parser


def regenerate_flags(path: str) -> None:
    """Rewrite `server_flags.py` from the installed SGLang's parser."""
    from importlib.metadata import version

    parser = argparse.ArgumentParser()
    import_server_args().add_cli_args(parser)
    write_table(path, "SGLANG_VERSION", version("sglang"), classify(parser))


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate-flags"]:
        import dynamo.sglang.server_flags as _flags

        regenerate_flags(_flags.__file__)
    else:
        print(build_parser().format_help())

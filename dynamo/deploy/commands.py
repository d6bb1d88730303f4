"""A container's command line as a list of `python -m dynamo.X ARGS` invocations.

Two forms appear in DGD manifests: exec form (`command: [python3, -m, dynamo.vllm]`,
`args: [--model, ...]`) and shell form (`command: [/bin/sh, -c]`, `args: ["python3 -m
dynamo.vllm --model ... 2>&1 | tee log"]`). Both parse into `Invocation`s that can be
checked against our argument parsers and rewritten (model swap, local ports), then turned
back into an argv that runs the same way.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

SHELLS = {"sh", "bash", "dash", "zsh"}
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_OPERATOR = re.compile(r"^[;&|<>()\n]+$")  # a newline ends a command as `;` does
_BARE_SHELL_WORD = re.compile(r"^[\w$/{}.:=,@%+\-]+$")


@dataclass
class Invocation:
    """One `python -m dynamo.X` found in a command line; `args` are the module's flags."""

    module: str
    args: list[str]
    start: int  # index of the first arg in the token list it came from
    end: int  # one past the last arg
    python_index: int = -1  # token naming the interpreter
    interpreter: str | None = None  # set to run under another interpreter


@dataclass
class CommandLine:
    """argv = command + args of a container, with the dynamo invocations found in it."""

    argv: list[str]
    shell: bool = False  # argv is [sh, options..., script, $0, $1...] with a -c among the options
    tokens: list[str] = field(default_factory=list)  # script tokens (shell) or argv (exec)
    script_at: int = -1  # shell form: where the script is in argv
    invocations: list[Invocation] = field(default_factory=list)

    @property
    def modules(self) -> list[str]:
        return [inv.module for inv in self.invocations]

    def render(self) -> list[str]:
        """The argv to execute, reflecting any edits made to `invocations`' args."""
        tokens = list(self.tokens)
        for inv in sorted(self.invocations, key=lambda i: i.start, reverse=True):
            tokens[inv.start:inv.end] = inv.args
            tokens[inv.start - 1] = inv.module  # `-m MODULE` just before the args (a worker run as another one)
            if inv.interpreter:
                tokens[inv.python_index] = inv.interpreter
        if not self.shell:
            return tokens
        return [*self.argv[:self.script_at], _join_script(tokens), *self.argv[self.script_at + 1:]]


def _join_script(tokens: list[str]) -> str:
    """Tokens back into a script; a redirect keeps its fd and target attached (`2>&1`)."""
    out = ""
    for i, token in enumerate(tokens):
        word = _shell_word(token)
        attached = i > 0 and ((token[:1] in "<>" and len(tokens[i - 1]) == 1 and tokens[i - 1].isdigit() and _attached_fd(tokens, i - 1))
                              or tokens[i - 1].endswith("&") and tokens[i - 1][:1] in "<>" and token.isdigit())
        out += word if attached or not out else " " + word
    return out


def _attached_fd(tokens: list[str], i: int) -> bool:
    return i + 1 < len(tokens) and tokens[i + 1][:1] in "<>"


def _shell_word(token: str) -> str:
    if _OPERATOR.match(token) or re.fullmatch(r"\d?>&?\d?|\d>", token):
        return token
    if "$" in token and _BARE_SHELL_WORD.match(token):
        return token  # keep `$VAR` expansion working
    if "$" in token:  # `"$(cat /config/x.json)"`, `"${MODEL}-fp8"`: quoted, still expanded
        return '"' + re.sub(r'(["\\`])', r"\\\1", token) + '"'
    return shlex.quote(token)


def _is_python(token: str) -> bool:
    return bool(_PYTHON.match(os.path.basename(token)))


def _find_invocations(tokens: list[str]) -> list[Invocation]:
    found = []
    i = 0
    while i < len(tokens):
        if not _is_python(tokens[i]):
            i += 1
            continue
        j = i + 1
        while j < len(tokens) and tokens[j].startswith("-") and tokens[j] != "-m":
            j += 1  # interpreter options such as -u
        if j + 1 < len(tokens) and tokens[j] == "-m" and tokens[j + 1].startswith("dynamo."):
            start = end = j + 2
            while end < len(tokens) and not _OPERATOR.match(tokens[end]):
                end += 1
            if end > start and end < len(tokens) and tokens[end - 1].isdigit() and tokens[end].startswith(">"):
                end -= 1  # `2>&1`: the fd number belongs to the redirect
            found.append(Invocation(tokens[j + 1], list(tokens[start:end]), start, end, python_index=i))
            i = end
        else:
            i = j
    return found


def parse_command(command: list[str] | None, args: list[str] | None) -> CommandLine:
    argv = [*(command or []), *(args or [])]
    at = _script_index(argv)
    if at is None:
        line = CommandLine(argv=argv, tokens=list(argv))
    else:
        lexer = shlex.shlex(_without_continuations(argv[at]), posix=True, punctuation_chars=";&|<>()\n")
        lexer.whitespace, lexer.commenters = " \t\r", ""  # newlines are separators; comments went above
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:
            tokens = []
        # `sh -c 'exec python3 -m dynamo.vllm "$@"' -- --model ...`: the words after the script are $0, $1...
        positional = argv[at + 2:]
        tokens = [t for token in tokens for t in (positional if token in ("$@", "${@}") else [token])]
        line = CommandLine(argv=argv, shell=True, tokens=tokens, script_at=at)
    line.invocations = _find_invocations(line.tokens)
    return line


def _script_index(argv: list[str]) -> int | None:
    """Where a shell's `-c` script is in `argv` (`sh -c`, `bash -lc`, `bash -e -o pipefail -c`: the
    first operand after options, one of which holds `c`); None when argv is not a shell running one."""
    if len(argv) < 2 or os.path.basename(argv[0]) not in SHELLS:
        return None
    i, script = 1, False
    while i < len(argv) and argv[i][:1] in "-+" and argv[i] not in ("-", "--"):
        if argv[i] in ("-o", "+o", "-O", "+O"):
            i += 1  # the option's name
        elif argv[i][:1] == "-" and argv[i][1:2] != "-" and "c" in argv[i][1:]:
            script = True
        i += 1
    if i < len(argv) and argv[i] == "--":
        i += 1
    return i if script and i < len(argv) else None


def _without_continuations(script: str) -> str:
    """`script` less what the shell drops before splitting words: backslash-newline line continuations
    (the multi-line `python3 -m dynamo.vllm \\` of manifests; shlex would keep a newline word) and
    comments, whose ending newline stays a command separator. Single quotes keep both literally."""
    out: list[str] = []
    quote, i = "", 0
    while i < len(script):
        ch = script[i]
        if ch == "\\" and quote != "'" and i + 1 < len(script):
            if script[i + 1] != "\n":
                out.append(script[i:i + 2])
            i += 2
            continue
        if ch == "#" and not quote and (not out or out[-1][-1:] in " \t\n;&|()"):
            end = script.find("\n", i)
            i = len(script) if end < 0 else end
            continue
        if ch in "'\"" and quote in ("", ch):
            quote = "" if quote else ch
        out.append(ch)
        i += 1
    return "".join(out)


_TMP_PATH = re.compile(r"(?<![\w./-])/tmp/[^\s'\"|;&<>()]+")


def probe_files(probe: dict) -> list[str]:
    """Files under /tmp an exec probe reads (pod-local paths a command must write)."""
    command = (probe.get("exec") or {}).get("command") or []
    return sorted({m.group(0) for part in command for m in _TMP_PATH.finditer(str(part))})


# ----- argument edits --------------------------------------------------------------------

def flag_value(args: list[str], names: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def set_flag(args: list[str], names: tuple[str, ...], value: str) -> list[str]:
    """Replace the value of the first of `names` present, else append `names[0] value`."""
    out = list(args)
    for i, arg in enumerate(out):
        for name in names:
            if arg == name and i + 1 < len(out):
                out[i + 1] = value
                return out
            if arg.startswith(name + "="):
                out[i] = f"{name}={value}"
                return out
    return [*out, names[0], value]


# Flags naming the model and the served name, per worker module.
MODEL_FLAGS = {
    "dynamo.mocker": (("--model-path",), ("--model-name",)),
    "dynamo.vllm": (("--model",), ("--served-model-name",)),
    "dynamo.sglang": (("--model-path", "--model"), ("--served-model-name",)),
    "dynamo.trtllm": (("--model", "--model-path"), ("--served-model-name",)),
    "dynamo.global_router": (("--model-path",), ("--model-name",)),  # the model its cards are built from
}


def model_of(inv: Invocation) -> str | None:
    """The model a worker invocation names (its model flag's value), if any."""
    flags = MODEL_FLAGS.get(inv.module)
    return flag_value(inv.args, flags[0]) if flags else None


def keep_served_name(inv: Invocation, original: str | None) -> None:
    """`inv`'s model no longer reads `original` (a local path took its place): serve it under the name the
    manifest implies, `original`, unless the manifest names the served model itself."""
    flags = MODEL_FLAGS.get(inv.module)
    if flags is None or not original or model_of(inv) == original or flag_value(inv.args, flags[1]) is not None:
        return
    inv.args = [*inv.args, flags[1][0], original]


def swap_model(inv: Invocation, path: str) -> None:
    """Point a worker at a local model dir, keeping the served name the manifest implies."""
    flags = MODEL_FLAGS.get(inv.module)
    if flags is None:
        return
    original = model_of(inv)
    inv.args = set_flag(inv.args, flags[0], path)
    keep_served_name(inv, original)

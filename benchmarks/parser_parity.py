"""Parser parity: does our frontend parse the same model output the same way as NVIDIA Dynamo 1.6.1's own
frontend, for every tool-call / reasoning parser name?

For each tool-call parser in `tests/frontend/test_parsers_tools.py` CASES (that file's documented-format
output per parser), a few reasoning parsers (qwen3, deepseek_r1, kimi, glm45, mistral, granite) and one
reasoning + tool call mix, a worker registered with that parser (model name = parser name; reasoning workers
`reasoning-<name>`) answers a chat request (the official `openai` client, with `tools`) with exactly that
text, unary and streamed, behind each stack's frontend:
- ours: `python -m dynamo.mocker --replay-file ... --dyn-tool-call-parser X --dyn-reasoning-parser Y`;
- Dynamo 1.6.1 (.venv-anchor, scripts/install_anchor_dynamo.sh): its mocker cannot replay chosen text, so
  `benchmarks/parser_parity_worker.py` stands in: Dynamo's own bindings (`register_model` with
  `ModelRuntimeConfig.tool_call_parser/reasoning_parser`, `serve_endpoint`) replaying the same file.
Compared: content and reasoning_content (stripped), tool calls (name + json.loads(arguments)),
finish_reason, and the calls' ids by kind (generated `call_*`/`call-*`/uuid vs the model's own; the cells
show the exact form). It prints a markdown table (parser | case | ours | Dynamo's | same?) and then every
difference in full. Our mocker sends one token per step; the stand-in sends `--chunk` tokens per chunk
(default 3): Dynamo's streaming parsers give different results for some formats at 1 and 3, so try both.
Dynamo's `harmony` parser needs the Harmony encoding, which it cannot fetch offline. On demand only:

    .venv/bin/python -m benchmarks.parser_parity [--only hermes kimi_k2 ...] [--chunk 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.routing_quality import stack_env
from tests.fixtures.procs import Cluster
from tests.fixtures.tools_model import tools_model
from tests.frontend.test_parsers_tools import CASES, TOOLS

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests/fixtures/tiny-model"
REASONING = {  # reasoning parser -> model output
    "qwen3": "<think>The user greets me.</think>Hello there!",
    "deepseek_r1": "The user greets me.</think>Hello there!",
    "kimi": "◁think▷The user greets me.◁/think▷Hello there!",
    "glm45": "<think>The user greets me.</think>Hello there!",
    "mistral": "[THINK]The user greets me.[/THINK]Hello there!",
    "granite": "Here is my thought process: The user greets me. Here is my response: Hello there!",
}
# model name -> (tool-call parser, reasoning parser, model output)
WORKERS = {
    **{name: (name, None, text) for name, (text, _, _) in CASES.items()},
    **{f"reasoning-{name}": (None, name, text) for name, text in REASONING.items()},
    "reasoning-qwen3+hermes": ("hermes", "qwen3", '<think>Paris weather.</think>\n<tool_call>\n{"name": "get_weather",'
                               ' "arguments": {"city": "Paris"}}\n</tool_call>'),
}


def key(model: str) -> str:
    return f"[[case {model}]]"  # bracketed: no key is a substring of another


def start_stack(stack: str, cluster: Cluster, replay: Path, models: list[str], chunk: int) -> dict[str, str]:
    """Every worker, then the frontend; returns {model: why it is not served}."""
    model_dir = cluster.model_dir
    procs = {}
    for name in models:
        tool, reasoning, _ = WORKERS[name]
        if stack == "ours":
            args = ["--speedup-ratio", "0", "--replay-file", str(replay)]
            args += ["--dyn-tool-call-parser", tool] if tool else []
            args += ["--dyn-reasoning-parser", reasoning] if reasoning else []
            procs[name] = cluster.mocker(*args, model_name=name, system_port=False)
        else:
            args = ["--model-path", str(model_dir), "--model-name", name, "--replay-file", str(replay),
                    "--chunk", str(chunk)]
            args += ["--tool-call-parser", tool] if tool else []
            args += ["--reasoning-parser", reasoning] if reasoning else []
            procs[name] = cluster.start("parser_parity_worker", args, name=f"worker-{name}",
                                        env={"PYTHONPATH": str(ROOT / "benchmarks"), "DYN_LOG": "info"})
    cluster.frontend()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = set(cluster.models())
        if all(m in listed or not procs[m].alive() for m in models):
            break
        time.sleep(0.5)
    listed = set(cluster.models())
    missing = {}
    for m in models:
        if m not in listed:
            last = ([ln for ln in procs[m].log().splitlines() if ln.strip()] or [""])[-1]
            state = "exited" if not procs[m].alive() else "not listed after 120 s"
            missing[m] = f"worker {state}: {last[:400]}"
    return missing


def id_form(call_id: str | None) -> str:
    """A generated id by its shape (`call_*`, `call-*`, bare `uuid`); the model's own one verbatim."""
    if call_id and call_id[:5] in ("call_", "call-"):
        return call_id[:5] + "*"
    if call_id and re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", call_id):
        return "uuid"
    return repr(call_id)


def summarize(content, reasoning, calls, finish) -> dict:
    """calls: [(id, name, arguments text)]."""
    parsed = []
    for _, name, arguments in calls:
        try:
            parsed.append([name, json.loads(arguments)])
        except (TypeError, ValueError):
            parsed.append([name, f"unparsable: {arguments!r}"])
    return {"content": (content or "").strip(), "reasoning": (reasoning or "").strip(), "calls": parsed,
            "finish": finish, "ids": [id_form(i) for i, _, _ in calls]}


def ask(client, model: str, stream: bool) -> dict:
    kwargs = dict(model=model, messages=[{"role": "user", "content": key(model)}], tools=TOOLS, max_tokens=600)
    try:
        if not stream:
            choice = client.chat.completions.create(**kwargs).choices[0]
            msg = choice.message
            calls = [(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls or []]
            return summarize(msg.content, (msg.model_extra or {}).get("reasoning_content"), calls,
                             choice.finish_reason)
        content, reasoning, calls, finish = [], [], {}, None
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            for choice in chunk.choices:
                delta = choice.delta
                content.append(delta.content or "")
                reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
                for tc in delta.tool_calls or []:
                    call = calls.setdefault(tc.index, [None, None, ""])
                    call[0] = call[0] or tc.id
                    if tc.function:
                        call[1] = call[1] or tc.function.name
                        call[2] += tc.function.arguments or ""
                finish = choice.finish_reason or finish
        return summarize("".join(content), "".join(reasoning), [calls[i] for i in sorted(calls)], finish)
    except Exception as exc:  # an error is a result too
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def run_stack(stack: str, models: list[str], keep: Path | None, chunk: int = 3) -> dict[tuple[str, str], dict]:
    tmp = Path(tempfile.mkdtemp(prefix=f"parity-{stack}-", dir=keep))
    results = {}
    model_dir, replay = tools_model(tmp, TINY, {key(m): WORKERS[m][2] for m in models})
    env, python = stack_env(stack)
    cluster = Cluster(tmp, model_dir, extra_env=env, python=python)
    try:
        missing = start_stack(stack, cluster, replay, models, chunk)
        client = cluster.openai_client(timeout=60)
        for m in models:
            for mode in ("unary", "stream"):
                results[(m, mode)] = {"error": missing[m]} if m in missing else ask(client, m, mode == "stream")
    finally:
        cluster.stop()
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def comparable(r: dict) -> dict:
    """What must match: ids only by kind (generated vs the model's own)."""
    if "error" in r:
        return {"error": True}
    return {**r, "ids": ["generated" if i in ("call_*", "call-*", "uuid") else i for i in r["ids"]]}


def cell(r: dict) -> str:
    if "error" in r:
        text = f"ERROR {r['error']}"
    else:
        calls = "; ".join(f"{n}{json.dumps(a, ensure_ascii=False)}" for n, a in r["calls"])
        text = (f"c={r['content']!r} r={r['reasoning']!r} calls=[{calls}] fin={r['finish']} "
                f"ids={','.join(r['ids']) or '-'}")
    return text.replace("|", "\\|").replace("\n", "\\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="model names (parser names) to run; default all")
    ap.add_argument("--chunk", type=int, default=3, help="tokens per chunk from Dynamo's stand-in worker (ours: 1)")
    ap.add_argument("--keep", type=Path, help="keep the run directories (logs) under this folder")
    args = ap.parse_args()
    models = [m for m in WORKERS if not args.only or m in args.only]
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    ours = run_stack("ours", models, args.keep)
    theirs = run_stack("anchor", models, args.keep, args.chunk)
    print("| parser | case | ours content/reasoning/calls | Dynamo 1.6.1's | same? |")
    print("|---|---|---|---|---|")
    diffs = []
    for m in models:
        tool, reasoning, _ = WORKERS[m]
        for mode in ("unary", "stream"):
            a, b = ours[(m, mode)], theirs[(m, mode)]
            same = comparable(a) == comparable(b)
            parser = " + ".join(p for p in (tool and f"tool={tool}", reasoning and f"reasoning={reasoning}") if p)
            print(f"| {parser} | {mode} | {cell(a)} | {cell(b)} | {'yes' if same else '**no**'} |")
            if not same:
                diffs.append((m, mode, a, b))
    print(f"\n{len(diffs)} difference(s) in {2 * len(models)} cases"
          " (ids compared by kind: generated call_/call-/uuid vs the model's own).")
    for m, mode, a, b in diffs:
        print(f"\n- {m} ({mode}); model output: {WORKERS[m][2]!r}\n  ours:   {json.dumps(a, ensure_ascii=False)}"
              f"\n  Dynamo: {json.dumps(b, ensure_ascii=False)}")


if __name__ == "__main__":
    main()

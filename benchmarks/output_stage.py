"""Cost of the frontend's output stage per token: detokenize + stop only, then with
reasoning and tool-call parsers, one token per call (the streaming worst case).

    python benchmarks/output_stage.py [--tokens 20000] [--model DIR]
Prints a table: tokens/s and microseconds per token for each configuration.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from dynamo.frontend.output import OutputSpec, OutputStage
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.protocol import LLMEngineOutput
from dynamo.llm.tiny_model import build_tiny_model

CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": 3}}</tool_call>'
TEXT = "<think>" + "The user asks about the weather, so I should call the tool. " * 8 + "</think>" + CALL * 4


def measure(pipeline: ModelPipeline, spec: OutputSpec, ids: list[int], total: int) -> float:
    done = 0
    start = time.perf_counter()
    while done < total:
        stage = OutputStage(pipeline, spec)
        for t in ids:
            stage.add(LLMEngineOutput(token_ids=[t]))
        stage.finish()
        done += len(ids)
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    model = args.model or build_tiny_model(tempfile.mkdtemp() + "/tiny", preset="tiny", weights=False)
    pipeline = ModelPipeline(build_card(model, name="tiny", block_size=16))
    ids = pipeline.tokenizer.encode(TEXT)
    long_ids = pipeline.tokenizer.encode('<tool_call>{"name": "write_file", "arguments": {"text": "'
                                         + "def f(x):\\n    return x * 2\\n" * 300 + '"}}</tool_call>')
    rows = [
        ("detokenize + stop", OutputSpec(["</s>"])),
        ("+ reasoning (qwen3)", OutputSpec(["</s>"], reasoning_parser="qwen3")),
        ("+ tools (hermes)", OutputSpec(["</s>"], tool_parser="hermes", tool_mode="auto")),
        ("+ reasoning + tools", OutputSpec(["</s>"], reasoning_parser="qwen3", tool_parser="hermes", tool_mode="auto")),
        ("+ tools (qwen3_coder)", OutputSpec(["</s>"], tool_parser="qwen3_coder", tool_mode="auto")),
    ]
    print(f"{len(ids)} tokens per response, one token per step, {args.tokens} tokens per row")
    print(f"{'configuration':<26}{'tokens/s':>12}{'us/token':>10}")
    for name, spec in rows:
        rate = measure(pipeline, spec, ids, args.tokens)
        print(f"{name:<26}{rate:>12,.0f}{1e6 / rate:>10.1f}")
    hermes = OutputSpec(["</s>"], tool_parser="hermes", tool_mode="auto")
    for name, spec in (("long args, no parser", OutputSpec(["</s>"])), ("long args, hermes", hermes)):
        rate = measure(pipeline, spec, long_ids, args.tokens)
        print(f"{name:<26}{rate:>12,.0f}{1e6 / rate:>10.1f}   ({len(long_ids)} tokens in one call)")


if __name__ == "__main__":
    main()

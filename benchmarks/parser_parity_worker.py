"""Stand-in worker for NVIDIA Dynamo 1.6.1 (run with its venv, by benchmarks/parser_parity.py): registers a
model with the given tool-call / reasoning parser through Dynamo's own bindings and answers each request with
the replay-file text whose key (longest first) the decoded prompt contains, a few tokens per chunk, in the
output format Dynamo's Python workers yield ({"token_ids": [...]}, then "finish_reason")."""

import argparse
import asyncio
import json

from tokenizers import Tokenizer

from dynamo.llm import ModelInput, ModelRuntimeConfig, ModelType, WorkerType, register_model
from dynamo.runtime import DistributedRuntime


async def main() -> None:
    p = argparse.ArgumentParser()
    for flag in ("--model-path", "--model-name", "--replay-file", "--tool-call-parser", "--reasoning-parser"):
        p.add_argument(flag)
    p.add_argument("--chunk", type=int, default=3)
    args = p.parse_args()
    tok = Tokenizer.from_file(f"{args.model_path}/tokenizer.json")
    scripts = json.loads(open(args.replay_file, encoding="utf-8").read())
    scripts = [(k, tok.encode(v, add_special_tokens=False).ids) for k, v in sorted(scripts.items(),
                                                                                  key=lambda kv: -len(kv[0]))]

    async def generate(request, context=None):
        prompt = tok.decode(request["token_ids"], skip_special_tokens=False)
        ids = next((ids for key, ids in scripts if key in prompt), None)
        if ids is None:  # no script: a short fixed answer
            ids = tok.encode("no script", add_special_tokens=False).ids
        for i in range(0, len(ids), args.chunk):
            yield {"token_ids": ids[i:i + args.chunk], "index": 0}
            await asyncio.sleep(0)
        yield {"token_ids": [], "index": 0, "finish_reason": "stop"}

    runtime = DistributedRuntime(asyncio.get_running_loop(), "file", "tcp")
    component = "pp" + "".join(c if c.isalnum() else "x" for c in args.model_name)
    endpoint = runtime.endpoint(f"dynamo.{component}.generate")
    config = ModelRuntimeConfig()
    config.tool_call_parser = args.tool_call_parser or None
    config.reasoning_parser = args.reasoning_parser or None
    await register_model(ModelInput.Tokens, ModelType.Chat | ModelType.Completions, endpoint, args.model_path,
                         args.model_name, worker_type=WorkerType.Aggregated, runtime_config=config)
    print("registered", args.model_name, flush=True)
    await endpoint.serve_endpoint(generate)


if __name__ == "__main__":
    asyncio.run(main())

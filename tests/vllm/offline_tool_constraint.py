"""vLLM's own offline engine held to the constraint the frontend asks for with tools, tool_choice auto and a
response_format (`dynamo.frontend.tool_guidance`, through `dynamo.vllm.handler.structured_outputs`), sampled
with many seeds (run with the vLLM venv's Python; needs the repository on PYTHONPATH).

    python offline_tool_constraint.py MODEL_DIR REQUEST_JSON SAMPLES MAX_TOKENS BLOCK_SIZE MAX_MODEL_LEN
Prints one JSON line: per sample, its text and vLLM's finish reason.
"""

import json
import sys

if __name__ == "__main__":  # vLLM's engine processes are spawned: keep the guard
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from dynamo.frontend.openai import decode_request
    from dynamo.vllm.handler import structured_outputs

    model, request, samples, max_tokens, block_size, max_len = sys.argv[1:7]
    guided = decode_request(request.encode(), "chat").guided_decoding(True, "hermes")
    llm = LLM(model=model, dtype="float32", enforce_eager=True, block_size=int(block_size),
              max_model_len=int(max_len), distributed_executor_backend="uni", seed=0)
    params = [SamplingParams(temperature=1.0, seed=seed, max_tokens=int(max_tokens),
                             structured_outputs=structured_outputs(guided)) for seed in range(int(samples))]
    prompt = TokensPrompt(prompt_token_ids=[6 + (i * 53) % 4000 for i in range(16)])
    outputs = llm.generate([prompt] * len(params), params, use_tqdm=False)
    print(json.dumps([[o.outputs[0].text, o.outputs[0].finish_reason] for o in outputs]))

"""vLLM's own offline greedy output for token-id prompts (run with the vLLM venv's Python).

    python offline_reference.py MODEL_DIR '[[ids...], ...]' MAX_TOKENS BLOCK_SIZE MAX_MODEL_LEN
Prints one JSON line: the generated token ids per prompt.
"""

import json
import sys

if __name__ == "__main__":  # vLLM's engine processes are spawned: keep the guard
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model, prompts, max_tokens, block_size, max_len = sys.argv[1:6]
    llm = LLM(model=model, dtype="float32", enforce_eager=True, block_size=int(block_size),
              max_model_len=int(max_len), distributed_executor_backend="uni", seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=int(max_tokens))
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in json.loads(prompts)], params,
                           use_tqdm=False)
    print(json.dumps([list(o.outputs[0].token_ids) for o in outputs]))

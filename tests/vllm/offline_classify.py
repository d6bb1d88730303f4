"""vLLM's own offline classification (pooling runner) for token-id prompts (run with the vLLM
venv's Python).

    python offline_classify.py MODEL_DIR '[[ids...], ...]' BLOCK_SIZE MAX_MODEL_LEN
Prints one JSON line: the class probabilities (list of floats) per prompt.
"""

import json
import sys

if __name__ == "__main__":  # vLLM's engine processes are spawned: keep the guard
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    model, prompts, block_size, max_len = sys.argv[1:5]
    llm = LLM(model=model, runner="pooling", dtype="float32", enforce_eager=True, block_size=int(block_size),
              max_model_len=int(max_len), distributed_executor_backend="uni", seed=0)
    outputs = llm.classify([TokensPrompt(prompt_token_ids=p) for p in json.loads(prompts)], use_tqdm=False)
    print(json.dumps([list(o.outputs.probs) for o in outputs]))

"""vLLM's own offline greedy output for token-id prompts (run with the vLLM venv's Python).

    python offline_reference.py MODEL_DIR '[[ids...], ...]' MAX_TOKENS BLOCK_SIZE MAX_MODEL_LEN [LORA_DIR]
Prints one JSON line: the generated token ids per prompt (with LORA_DIR: with that adapter applied
through vLLM's own `LoRARequest`).
"""

import json
import sys

if __name__ == "__main__":  # vLLM's engine processes are spawned: keep the guard
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model, prompts, max_tokens, block_size, max_len = sys.argv[1:6]
    lora_dir = sys.argv[6] if len(sys.argv) > 6 else None
    lora_args = {"enable_lora": True, "max_loras": 1, "max_lora_rank": 8} if lora_dir else {}
    llm = LLM(model=model, dtype="float32", enforce_eager=True, block_size=int(block_size),
              max_model_len=int(max_len), distributed_executor_backend="uni", seed=0, **lora_args)
    params = SamplingParams(temperature=0.0, max_tokens=int(max_tokens))
    lora = None
    if lora_dir:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest(lora_name="reference", lora_int_id=1, lora_path=lora_dir)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in json.loads(prompts)], params,
                           use_tqdm=False, lora_request=lora)
    print(json.dumps([list(o.outputs[0].token_ids) for o in outputs]))

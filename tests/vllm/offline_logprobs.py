"""vLLM's own offline greedy output WITH logprobs for token-id prompts (run with the
vLLM venv's Python).

    python offline_logprobs.py MODEL_DIR '[[ids...], ...]' MAX_TOKENS TOP BLOCK_SIZE MAX_MODEL_LEN
Prints one JSON line: per prompt {"ids", "logprobs", "top": [[[id, logprob], ...] per position]}.
"""

import json
import sys

if __name__ == "__main__":  # vLLM's engine processes are spawned: keep the guard
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model, prompts, max_tokens, top, block_size, max_len = sys.argv[1:7]
    llm = LLM(model=model, dtype="float32", enforce_eager=True, block_size=int(block_size),
              max_model_len=int(max_len), distributed_executor_backend="uni", seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=int(max_tokens), logprobs=int(top))
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in json.loads(prompts)], params,
                           use_tqdm=False)
    result = []
    for o in outputs:
        c = o.outputs[0]
        result.append({
            "ids": list(c.token_ids),
            "logprobs": [lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)],
            "top": [sorted([[t, v.logprob] for t, v in lp.items() if v.rank <= int(top)], key=lambda e: -e[1])
                    for lp in c.logprobs],
        })
    print(json.dumps(result))

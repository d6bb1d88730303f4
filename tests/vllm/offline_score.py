"""vLLM's own offline cross-encoder scoring (`LLM.score`: vLLM pairs the query with each document
its way) for a one-label classification model (run with the vLLM venv's Python).

    python offline_score.py MODEL_DIR QUERY '["doc", ...]' BLOCK_SIZE MAX_MODEL_LEN
Prints one JSON line: the relevance score per document, in the documents' order.
"""

import json
import sys

if __name__ == "__main__":  # vLLM's engine processes are spawned: keep the guard
    from vllm import LLM

    model, query, documents, block_size, max_len = sys.argv[1:6]
    llm = LLM(model=model, runner="pooling", dtype="float32", enforce_eager=True, block_size=int(block_size),
              max_model_len=int(max_len), distributed_executor_backend="uni", seed=0)
    outputs = llm.score(query, json.loads(documents), use_tqdm=False)
    print(json.dumps([o.outputs.score for o in outputs]))

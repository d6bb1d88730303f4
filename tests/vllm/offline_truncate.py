"""vLLM's own cut of scoring texts to a token limit (`truncate_text_to_tokens`, what its rerank and score
routes do with `max_tokens_per_query` / `max_tokens_per_doc`), with the model's HF tokenizer (run with
the vLLM venv's Python).

    python offline_truncate.py MODEL_DIR '["text", ...]' '[limit, ...]'
Prints one JSON line: for each text, its cut at each limit.
"""

import json
import sys

if __name__ == "__main__":
    from transformers import AutoTokenizer
    from vllm.entrypoints.pooling.scoring.utils import truncate_text_to_tokens

    model, texts, limits = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    tokenizer = AutoTokenizer.from_pretrained(model)
    print(json.dumps([[truncate_text_to_tokens(t, tokenizer, n) for n in limits] for t in texts]))

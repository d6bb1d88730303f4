"""Where the frontend's model files are: the directory with the tokenizer and config files
a worker's model card points at (never weights)."""

from __future__ import annotations

import os


def local_model_dir(model: str, tokenizer: str | None = None, revision: str | None = None,
                    cache_dir: str | None = None) -> str:
    """A local path is used as is; an HF id resolves to its cached snapshot (only the small
    files are fetched if something is missing), in `cache_dir` (None: this process's HF cache)."""
    for candidate in (tokenizer, model):
        if candidate and os.path.isdir(candidate) and os.path.isfile(os.path.join(candidate, "tokenizer.json")):
            return candidate
    if os.path.isdir(model):
        return model
    from huggingface_hub import snapshot_download

    return snapshot_download(tokenizer or model, revision=revision, cache_dir=cache_dir,
                             allow_patterns=["*.json", "*.jinja", "tokenizer*", "*.model"])

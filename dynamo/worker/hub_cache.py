"""Hugging Face model ids on this machine: a hub id's snapshot in a local HF cache, found without
the network.

NVIDIA Dynamo's workers take "a model directory or a Hugging Face model ID" (its profiler writes
DGDs naming ids), so the mocker resolves an id here before falling back to a download
(`model_files.local_model_dir`), and `deploy run` checks a worker's id here before starting it.
"""

from __future__ import annotations

import os


def is_repo_id(value: str) -> bool:
    """`ORG/NAME` or `NAME` as the hub spells ids; a path-looking value (`/x`, `./x`, `~/x`, `a/b/c`) is not."""
    if not value or value.startswith(("/", ".", "~")) or value.count("/") > 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def cached_snapshot(repo_id: str, cache_dir: str | os.PathLike | None = None,
                    revision: str | None = None) -> str | None:
    """The cached snapshot directory of `repo_id` holding its config.json, or None. Never contacts the
    hub (`local_files_only`), so it answers the same with or without a network. `cache_dir` None: the
    cache huggingface_hub uses in this process (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError):  # not cached; ValueError: not a valid id
        return None
    # A snapshot without config.json was fetched for something else (a LoRA, a tokenizer only).
    return path if os.path.isfile(os.path.join(path, "config.json")) else None


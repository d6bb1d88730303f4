"""A Hugging Face hub cache laid out on disk as `huggingface-cli download` leaves it
(`models--ORG--NAME/refs/main` naming a commit, `snapshots/COMMIT/` holding the files), for tests
of what resolves a model id without a network."""

from __future__ import annotations

import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hf_cache(hub: Path, repo_id: str, model_dir: Path, commit: str = COMMIT) -> Path:
    """`repo_id` cached in `hub` with `model_dir`'s files (copied, not blobs and symlinks: huggingface_hub
    reads snapshots either way); the snapshot directory."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot

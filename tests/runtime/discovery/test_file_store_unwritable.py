"""The embedded file store when it cannot be written (a full disk, a path under a file): a process
stops at start-up with one line naming the store, not a traceback, and no temp file is left behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from dynamo.runtime.discovery.base import DiscoveryUnavailable
from dynamo.runtime.discovery.file import FileStore
from dynamo.runtime.discovery.file_layout import write_atomic


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path):
    (tmp_path / "key.kv").mkdir()  # the rename onto it fails, after the temp file was written
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "key.kv"), b"value")
    assert [p.name for p in tmp_path.iterdir()] == ["key.kv"]


def test_a_store_that_cannot_be_written_is_discovery_unavailable(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")

    async def start() -> None:
        store = FileStore(root=str(tmp_path / "a-file" / "kv"))
        try:
            await store.start()
        finally:
            await store.close()

    with pytest.raises(DiscoveryUnavailable, match="cannot be written"):
        asyncio.run(start())


@pytest.mark.e2e
def test_a_worker_on_an_unwritable_store_exits_with_one_line(tiny_model, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    env = {**os.environ, "DYN_FILE_KV": str(tmp_path / "a-file" / "kv")}
    done = subprocess.run([sys.executable, "-m", "dynamo.mocker", "--model-path", str(tiny_model)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "cannot be written" in done.stderr and "Traceback" not in done.stderr

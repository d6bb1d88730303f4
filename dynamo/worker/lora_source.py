"""Where a LoRA adapter's files come from: `file://`, `hf://` and `s3://` sources, and the
local cache (`DYN_LORA_PATH`, default `~/.cache/dynamo_loras`) remote ones land in.

A source resolves to a local directory holding `adapter_config.json` (plus the weights).
A remote source already in the cache is used as it is (no network); one that is not is
fetched, and a fetch that cannot happen here fails with a `LoraSourceError` saying why.
A fetch lands in a staging directory that is renamed into the cache only once complete, so
a fetch cut short (a deadline, a crash) never leaves a half adapter that later loads would
take as cached.
"""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from dynamo.runtime.config import from_namespace, setting

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class LoraSettings:
    lora_path: str = setting("~/.cache/dynamo_loras", "Local cache directory for LoRA adapters from remote sources",
                             env="DYN_LORA_PATH")
    lora_fetch_timeout_secs: float = setting(
        600.0, "Deadline for fetching a remote LoRA adapter into the cache; a load past it answers 504 (the "
        "fetch finishes in the background and a later load finds it cached)", env="DYN_LORA_FETCH_TIMEOUT_SECS")


class LoraSourceError(Exception):
    """A source that cannot be used; `status` is the HTTP status the load request answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _settings() -> LoraSettings:
    return from_namespace(LoraSettings, argparse.Namespace())


def cache_dir() -> Path:
    return Path(os.path.expanduser(_settings().lora_path))


def fetch_timeout() -> float:
    return _settings().lora_fetch_timeout_secs


def _cache_slot(uri: str) -> Path:
    parsed = urlparse(uri)
    parts = [parsed.scheme, parsed.netloc, *[p for p in parsed.path.split("/") if p and p not in (".", "..")]]
    return cache_dir().joinpath(*parts)


def _check_adapter_dir(path: Path, uri: str) -> Path:
    if not path.is_dir():
        raise LoraSourceError(f"LoRA source {uri} is not a directory", 404 if not path.exists() else 400)
    if not (path / ADAPTER_CONFIG).is_file():
        raise LoraSourceError(f"LoRA source {uri} has no {ADAPTER_CONFIG}", 400)
    return path


def resolve_source(uri: str) -> Path:
    """A local adapter directory for `uri` (blocking: run it in a thread)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return _check_adapter_dir(Path(unquote(parsed.netloc + parsed.path)), uri)
    if parsed.scheme not in ("hf", "s3"):
        raise LoraSourceError(f"unsupported LoRA source {uri!r}: use file://, hf:// or s3://")
    if not parsed.netloc:
        raise LoraSourceError(f"LoRA source {uri!r} names no repository or bucket")
    slot = _cache_slot(uri)
    if (slot / ADAPTER_CONFIG).is_file():
        return slot
    if parsed.scheme == "hf":
        return _fetch_hf(parsed.netloc + parsed.path, slot, uri)
    raise LoraSourceError(f"cannot fetch {uri}: this worker has no S3 client; put the adapter in the cache at "
                          f"{slot}", 502)


def _fetch_hf(repo: str, slot: Path, uri: str) -> Path:
    repo, _, revision = repo.strip("/").partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise LoraSourceError(f"cannot fetch {uri}: huggingface_hub is not installed", 502) from None
    staging = slot.with_name(f".{slot.name}.partial-{uuid.uuid4().hex[:12]}")
    try:
        snapshot_download(repo_id=repo, revision=revision or None, local_dir=str(staging))
        _check_adapter_dir(staging, uri)
        _publish(staging, slot)
    except LoraSourceError:
        raise
    except Exception as exc:  # offline, unknown repo, no access: all say the same to the caller
        raise LoraSourceError(f"cannot fetch {uri} from the Hugging Face Hub: {type(exc).__name__}: {exc}",
                              502) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _check_adapter_dir(slot, uri)


def _publish(staging: Path, slot: Path) -> None:
    """Move a complete fetch into the cache; a concurrent fetch that got there first wins, and a slot
    left incomplete by an older version (no adapter_config.json) is moved aside and replaced."""
    slot.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(slot)
        return
    except OSError:
        if (slot / ADAPTER_CONFIG).is_file():
            return
    stale = slot.with_name(f".{slot.name}.stale-{uuid.uuid4().hex[:12]}")
    slot.rename(stale)
    shutil.rmtree(stale, ignore_errors=True)
    staging.rename(slot)

"""The files a model card points at, made local for the frontend.

Our workers put absolute local paths in their cards (frontend and workers share a disk,
as with Dynamo's file discovery). Dynamo's workers instead serve the files over HTTP
(`http://host:port/v1/metadata/{ns}/{comp}/{ep}/{model}/_base/{file}`) and put those
URLs in the card; `local_model_dir` downloads them once into a cache directory named by
their checksums, refusing any file whose size or blake3 checksum differs from the card.
Blocking: call it off the event loop (the frontend builds pipelines in an executor).
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import blake3

from dynamo.llm.model_card import CheckedFile, ModelDeploymentCard

FETCH_TIMEOUT = 30.0  # seconds per file
MAX_FILE_BYTES = 256 << 20  # tokenizer files are megabytes; refuse anything absurd


class CardFileError(RuntimeError):
    pass


def _is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def local_model_dir(card: ModelDeploymentCard) -> Path:
    tokenizer = card.files.get("hf_tokenizer_json")
    if tokenizer is None:
        return Path(card.model_path)
    if not _is_url(tokenizer.path):
        return Path(tokenizer.path).parent
    wanted = [*card.files.values(), *card.extra_files]
    key = blake3.blake3("\0".join(sorted(f.checksum for f in wanted)).encode()).hexdigest()[:24]
    target = Path(tempfile.gettempdir()) / "dynamo-mdc-cache" / key
    target.mkdir(parents=True, exist_ok=True)
    for entry in wanted:
        _fetch(entry, target)
    return target


def chat_template_file(card: ModelDeploymentCard, model_dir: Path) -> Path | None:
    """The card's own Jinja template file (the worker's `--custom-jinja-template`, or the model's
    `chat_template.jinja`) in `local_model_dir(card)`'s result; None when the card names none."""
    entry = card.files.get("hf_chat_template")
    if entry is None:
        return None
    if _is_url(entry.path):
        return model_dir / Path(urllib.parse.urlparse(entry.path).path).name
    return Path(entry.path)


def _fetch(entry: CheckedFile, target: Path) -> None:
    name = Path(urllib.parse.urlparse(entry.path).path).name
    if not name or name in (".", ".."):
        raise CardFileError(f"card file URL {entry.path!r} names no file")
    dest = target / name
    if dest.is_file() and _matches(dest.read_bytes(), entry):
        return
    if entry.size > MAX_FILE_BYTES:
        raise CardFileError(f"card file {entry.path} is {entry.size} bytes (limit {MAX_FILE_BYTES})")
    with urllib.request.urlopen(entry.path, timeout=FETCH_TIMEOUT) as resp:  # card URLs are http
        data = resp.read(entry.size + 1)
    if not _matches(data, entry):
        raise CardFileError(f"card file {entry.path}: size or checksum differs from the card's {entry.checksum}")
    tmp = dest.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def _matches(data: bytes, entry: CheckedFile) -> bool:
    algo, _, digest = entry.checksum.partition(":")
    return len(data) == entry.size and algo == "blake3" and blake3.blake3(data).hexdigest() == digest

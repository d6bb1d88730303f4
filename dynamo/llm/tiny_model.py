"""Offline, deterministic builder for a tiny HF-format Llama model directory.

Owns everything a test or CI job needs to serve a real model without network access:
a byte-level BPE tokenizer trained on files every machine image has (license texts and
the running Python's stdlib), a ChatML chat template, Llama configs, and (when torch and
transformers are importable) randomly initialised bf16 safetensors weights.

    python -m dynamo.llm.tiny_model --out /tmp/tiny-llama [--preset tiny|small] [--seed 1234]

Two builds on the same machine image produce byte-identical tokenizer and config files;
a `dynamo_tiny_model.json` stamp lets repeated builds into the same directory be skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BUILDER_VERSION = 1
STAMP_FILE = "dynamo_tiny_model.json"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
UNK, BOS, EOS_TEXT, PAD, IM_START, IM_END = range(6)
CORPUS_CAP_BYTES = 6 * 1024 * 1024
LICENSES_DIR = Path("/usr/share/common-licenses")

# ChatML. Content that is None (assistant turns carrying only tool calls) renders as "".
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


@dataclass(frozen=True)
class Preset:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int = 64
    max_position_embeddings: int = 2048


PRESETS = {
    "tiny": Preset(4096, 256, 512, 2, 4, 2),
    "small": Preset(8192, 512, 1536, 8, 8, 4),
}


def _sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def corpus_files() -> list[Path]:
    """License texts, then top-level stdlib modules, then stdlib subpackages; capped."""
    licenses = sorted({p.resolve() for p in LICENSES_DIR.glob("*") if p.is_file()})
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    top = sorted(stdlib.glob("*.py"))
    nested = sorted(
        p for p in stdlib.rglob("*.py")
        if p.parent != stdlib and "site-packages" not in p.parts and "dist-packages" not in p.parts
    )
    files, total = [], 0
    for path in [*licenses, *top, *nested]:
        size = path.stat().st_size
        if total + size > CORPUS_CAP_BYTES:
            continue
        files.append(path)
        total += size
    return files


def read_corpus() -> tuple[list[str], str]:
    """Returns the corpus as text chunks plus its sha256/16 (to tell images apart)."""
    digest = hashlib.sha256()
    texts = []
    for path in corpus_files():
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + data)
        texts.append(data.decode("utf-8", errors="replace"))
    return texts, digest.hexdigest()[:16]


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def tokenizer_config(max_len: int) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "<|im_end|>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "chat_template": CHATML_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for i, t in enumerate(SPECIAL_TOKENS)
        },
    }


def special_tokens_map() -> dict:
    return {"bos_token": "<s>", "eos_token": "<|im_end|>", "pad_token": "<pad>", "unk_token": "<unk>",
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}


def model_config(p: Preset) -> dict:
    # Both the transformers-4 (rope_theta, torch_dtype) and -5 (rope_parameters, dtype) spellings.
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": p.vocab_size,
        "hidden_size": p.hidden_size,
        "intermediate_size": p.intermediate_size,
        "num_hidden_layers": p.num_hidden_layers,
        "num_attention_heads": p.num_attention_heads,
        "num_key_value_heads": p.num_key_value_heads,
        "head_dim": p.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": p.max_position_embeddings,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "use_cache": True,
        "tie_word_embeddings": False,
        "bos_token_id": BOS,
        "eos_token_id": IM_END,
        "pad_token_id": PAD,
        "torch_dtype": "bfloat16",
        "dtype": "bfloat16",
    }


def generation_config() -> dict:
    return {"bos_token_id": BOS, "eos_token_id": [IM_END, EOS_TEXT], "pad_token_id": PAD}


def torch_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _file_hashes(out: Path, names: list[str]) -> dict[str, str] | None:
    try:
        return {n: _sha16((out / n).read_bytes()) for n in names}
    except FileNotFoundError:
        return None


def _stamp_matches(out: Path, want: dict) -> bool:
    try:
        stamp = json.loads((out / STAMP_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return False
    if any(stamp.get(k) != v for k, v in want.items()):
        return False
    return _file_hashes(out, sorted(stamp.get("files", {}))) == stamp.get("files")


def write_model_dir(out: Path, files: dict[str, bytes], stamp: dict,
                    save_weights: Callable[[Path], None] | None = None) -> dict[str, str]:
    """Write a built model directory: the weights first (`save_weights`; a `save_pretrained` may write
    config files of its own, which `files` then overwrite), then `files`, then the stamp (`stamp` plus
    every file's hash). Returns the hashes."""
    out.mkdir(parents=True, exist_ok=True)
    if save_weights is not None:
        save_weights(out)
    for name, data in files.items():
        _write(out / name, data)
    hashes = _file_hashes(out, sorted(files) + (["model.safetensors"] if save_weights is not None else []))
    _write(out / STAMP_FILE, _json_bytes({**stamp, "files": hashes}))
    return hashes


def builder_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The sibling builders' command line: --out, --seed, --weights (off unless given)."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--weights", action="store_true", help="also write random bf16 weights (needs torch)")
    return ap


def run_build(build: Callable[[], object]) -> int:
    """A builder's exit status: 0, or 2 with the reason on stderr (no torch for weights, a bad argument)."""
    try:
        build()
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _save_weights(out: Path, cfg: dict, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    # Only architecture keys: dtype/rope spellings differ across transformers versions, and
    # config.json is rewritten by the caller anyway.
    skip = {"architectures", "model_type", "torch_dtype", "dtype", "rope_parameters", "rope_scaling"}
    hf_cfg = LlamaConfig(**{k: v for k, v in cfg.items() if k not in skip})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(hf_cfg).to(torch.bfloat16).eval()
    try:
        model.save_pretrained(out, safe_serialization=True)
    except TypeError:  # transformers versions without the flag always write safetensors
        model.save_pretrained(out)


def build_tiny_model(out_dir, preset: str = "tiny", seed: int = 1234, weights: bool | None = None,
                     vocab_size: int | None = None, verbose: bool = False) -> Path:
    """Builds (or reuses) a tiny Llama model directory at out_dir and returns its path.

    weights=None means "if torch and transformers are importable"; weights=True without
    them raises RuntimeError.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    have_torch = torch_available()
    if weights and not have_torch:
        raise RuntimeError("--weights needs torch and transformers importable in this Python; "
                           "install them or pass --no-weights for a tokenizer/config-only build")
    weights = have_torch if weights is None else weights
    p = PRESETS[preset]
    if vocab_size is not None:
        p = Preset(**{**p.__dict__, "vocab_size": vocab_size})
    out = Path(out_dir)
    want = {"builder_version": BUILDER_VERSION, "preset": preset, "seed": seed,
            "vocab_size": p.vocab_size, "weights": weights}
    if _stamp_matches(out, want):
        if verbose:
            print(f"tiny model already built at {out}")
        return out

    t0 = time.perf_counter()
    texts, corpus_hash = read_corpus()
    tok = train_tokenizer(texts, p.vocab_size)
    cfg = model_config(p)
    files = {
        "tokenizer.json": (tok.to_str(pretty=True) + "\n").encode(),
        "tokenizer_config.json": _json_bytes(tokenizer_config(p.max_position_embeddings)),
        "special_tokens_map.json": _json_bytes(special_tokens_map()),
        "chat_template.jinja": CHATML_TEMPLATE.encode(),
        "config.json": _json_bytes(cfg),
        "generation_config.json": _json_bytes(generation_config()),
    }
    hashes = write_model_dir(out, files, {**want, "corpus_sha256_16": corpus_hash},
                             (lambda d: _save_weights(d, cfg, seed)) if weights else None)
    if verbose:
        print(f"built {preset} model at {out} in {time.perf_counter() - t0:.1f}s "
              f"(corpus {len(texts)} files, corpus_sha256_16 {corpus_hash}, "
              f"tokenizer {hashes['tokenizer.json']}, weights {hashes.get('model.safetensors', 'none')})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dynamo.llm.tiny_model", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--weights", action=argparse.BooleanOptionalAction, default=None,
                    help="write random bf16 weights (default: only if torch+transformers import)")
    ap.add_argument("--vocab-size", type=int, default=None, help="override the preset's vocab size")
    args = ap.parse_args(argv)
    return run_build(lambda: build_tiny_model(args.out, args.preset, args.seed, args.weights, args.vocab_size,
                                              verbose=True))


if __name__ == "__main__":
    sys.exit(main())

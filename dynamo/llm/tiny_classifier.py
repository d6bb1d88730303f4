"""Offline, deterministic builder for a tiny sequence-classification model directory.

Owns the classification layer on top of `dynamo.llm.tiny_model`: the tiny Llama's tokenizer,
ChatML template and generation config unchanged, a `LlamaForSequenceClassification` config
(labels in `id2label` / `label2id`, `pad_token_id` so the last real token can be found) and,
with --weights, random bf16 weights whose head is `score.weight` (num_labels x hidden).

    python -m dynamo.llm.tiny_classifier --out /tmp/tiny-cls [--weights] [--seed 1234]
        [--labels negative,neutral,positive]   (one label, e.g. --labels LABEL_0: a cross-encoder reranker)

vLLM maps the `*ForSequenceClassification` suffix to runner "pooling" + convert "classify"
(`as_seq_cls_model` around its Llama): no flags are needed to serve it. Two builds produce
byte-identical tokenizer and config files; tiny_model's `dynamo_tiny_model.json` stamp (with
"kind": "seq_cls") lets repeated builds into the same directory be skipped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dynamo.llm.tiny_model import (
    CHATML_TEMPLATE, PRESETS, _json_bytes, _stamp_matches, builder_parser, generation_config, run_build,
    write_model_dir,
    model_config, read_corpus, special_tokens_map, tokenizer_config, torch_available, train_tokenizer,
)

BUILDER_VERSION = 1
PRESET = "tiny"
DEFAULT_LABELS = ("negative", "neutral", "positive")


def check_labels(labels) -> tuple[str, ...]:
    """Distinct, non-empty label names: two or more for a classifier (softmax over them), one for a
    cross-encoder reranker (a sigmoid relevance score, what vLLM scores and /v1/rerank ranks by)."""
    labels = tuple(str(label).strip() for label in labels)
    if not labels or any(not label for label in labels) or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be one or more distinct non-empty names, got {list(labels)}")
    return labels


def classifier_config(labels) -> dict:
    cfg = model_config(PRESETS[PRESET])
    labels = check_labels(labels)
    cfg["architectures"] = ["LlamaForSequenceClassification"]
    cfg["num_labels"] = len(labels)
    cfg["id2label"] = {str(i): label for i, label in enumerate(labels)}
    cfg["label2id"] = {label: i for i, label in enumerate(labels)}
    if len(labels) > 1:
        cfg["problem_type"] = "single_label_classification"
    return cfg  # pad_token_id (PAD) comes from model_config


def _save_weights(out: Path, cfg: dict, seed: int) -> None:
    """Random bf16 weights under HF's names: `model.*` backbone plus `score.weight`."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForSequenceClassification

    skip = {"architectures", "model_type", "torch_dtype", "dtype", "rope_parameters", "rope_scaling",
            "id2label", "label2id"}
    hf_cfg = LlamaConfig(**{k: v for k, v in cfg.items() if k not in skip})
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(hf_cfg)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    if state["score.weight"].shape != (cfg["num_labels"], cfg["hidden_size"]):
        raise RuntimeError(f"unexpected score head shape {tuple(state['score.weight'].shape)}")
    save_file(dict(sorted(state.items())), str(out / "model.safetensors"), metadata={"format": "pt"})


def _files(tok, cfg: dict) -> dict[str, bytes]:
    return {
        "tokenizer.json": (tok.to_str(pretty=True) + "\n").encode(),
        "tokenizer_config.json": _json_bytes(tokenizer_config(PRESETS[PRESET].max_position_embeddings)),
        "special_tokens_map.json": _json_bytes(special_tokens_map()),
        "chat_template.jinja": CHATML_TEMPLATE.encode(),
        "config.json": _json_bytes(cfg),
        "generation_config.json": _json_bytes(generation_config()),
    }


def build_tiny_classifier(out_dir, labels=DEFAULT_LABELS, seed: int = 1234, weights: bool = False,
                          verbose: bool = False) -> Path:
    """Builds (or reuses) a tiny Llama classifier directory at out_dir and returns its path.

    weights=True needs torch and transformers importable (RuntimeError otherwise); bad
    labels raise ValueError.
    """
    labels = check_labels(labels)
    if weights and not torch_available():
        raise RuntimeError("--weights needs torch and transformers importable in this Python")
    out = Path(out_dir)
    want = {"kind": "seq_cls", "builder_version": BUILDER_VERSION, "preset": PRESET, "seed": seed,
            "weights": weights, "labels": list(labels)}
    if _stamp_matches(out, want):
        if verbose:
            print(f"tiny classifier already built at {out}")
        return out

    t0 = time.perf_counter()
    texts, corpus_hash = read_corpus()
    tok = train_tokenizer(texts, PRESETS[PRESET].vocab_size)
    cfg = classifier_config(labels)
    hashes = write_model_dir(out, _files(tok, cfg), {**want, "corpus_sha256_16": corpus_hash},
                             (lambda d: _save_weights(d, cfg, seed)) if weights else None)
    if verbose:
        print(f"built tiny classifier at {out} in {time.perf_counter() - t0:.1f}s (labels {list(labels)}, "
              f"corpus_sha256_16 {corpus_hash}, tokenizer {hashes['tokenizer.json']}, "
              f"weights {hashes.get('model.safetensors', 'none')})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = builder_parser("python -m dynamo.llm.tiny_classifier", __doc__)
    ap.add_argument("--labels", default=",".join(DEFAULT_LABELS),
                    help="comma-separated class names, index order (default: %(default)s)")
    args = ap.parse_args(argv)
    return run_build(lambda: build_tiny_classifier(args.out, args.labels.split(","), args.seed, args.weights,
                                                   verbose=True))


if __name__ == "__main__":
    sys.exit(main())

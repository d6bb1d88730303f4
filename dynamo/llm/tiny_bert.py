"""Offline, deterministic builder for a tiny BERT cross-encoder directory (the shape of the
`cross-encoder/ms-marco-*` rerankers): a WordPiece tokenizer trained on tiny_model's corpus whose pair
template is `[CLS] query [SEP] document [SEP]` with segment ids 0 then 1, a `BertForSequenceClassification`
config with one label and, with --weights, random fp32 weights. vLLM serves it as a cross-encoder (its
scoring API; `dynamo.vllm --classify-worker`), reading the segment ids: what /v1/rerank's pairs must carry.

    python -m dynamo.llm.tiny_bert --out /tmp/tiny-bert [--weights] [--seed 1234]

Two builds produce byte-identical tokenizer and config files; tiny_model's stamp (with "kind":
"bert_cross_encoder") lets repeated builds into the same directory be skipped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dynamo.llm.tiny_model import (
    _json_bytes, _stamp_matches, builder_parser, read_corpus, run_build, torch_available, write_model_dir,
)

BUILDER_VERSION = 1
VOCAB_SIZE = 2000
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_POSITIONS = 2048  # as the tiny Llama's, so the tests' engine arguments serve both


def train_wordpiece(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIALS),
                                                             show_progress=False))
    # The trainer numbers the tokens in hash order (differently every run); WordPiece reads its vocabulary
    # as a set (longest match first), so numbering it sorted makes builds identical and changes nothing else.
    learned = sorted(set(tok.get_vocab()) - set(SPECIALS))
    tok.model = models.WordPiece({t: i for i, t in enumerate([*SPECIALS, *learned])}, unk_token="[UNK]")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def bert_config(vocab_size: int) -> dict:
    return {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": vocab_size,
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
            "max_position_embeddings": MAX_POSITIONS, "type_vocab_size": 2, "hidden_act": "gelu",
            "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            # wide random weights: every input (the segment ids too) moves the score visibly
            "initializer_range": 0.5, "pad_token_id": 0, "num_labels": 1, "id2label": {"0": "LABEL_0"},
            "label2id": {"LABEL_0": 0}, "torch_dtype": "float32"}


def tokenizer_config() -> dict:
    return {"tokenizer_class": "BertTokenizerFast", "do_lower_case": True, "model_max_length": MAX_POSITIONS,
            "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
            "mask_token": "[MASK]"}


def _save_weights(out: Path, cfg: dict, seed: int) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**{k: v for k, v in cfg.items()
                                                        if k not in ("architectures", "model_type", "torch_dtype")}))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(dict(sorted(state.items())), str(out / "model.safetensors"), metadata={"format": "pt"})


def build_tiny_bert(out_dir, seed: int = 1234, weights: bool = False, verbose: bool = False) -> Path:
    """Builds (or reuses) the tiny BERT cross-encoder at out_dir and returns its path; weights=True needs
    torch and transformers importable (RuntimeError otherwise)."""
    if weights and not torch_available():
        raise RuntimeError("--weights needs torch and transformers importable in this Python")
    out = Path(out_dir)
    want = {"kind": "bert_cross_encoder", "builder_version": BUILDER_VERSION, "seed": seed, "weights": weights}
    if _stamp_matches(out, want):
        return out
    t0 = time.perf_counter()
    texts, corpus_hash = read_corpus()
    tok = train_wordpiece(texts)
    cfg = bert_config(tok.get_vocab_size())
    files = {"tokenizer.json": (tok.to_str(pretty=True) + "\n").encode(),
             "tokenizer_config.json": _json_bytes(tokenizer_config()), "config.json": _json_bytes(cfg)}
    write_model_dir(out, files, {**want, "corpus_sha256_16": corpus_hash},
                    (lambda d: _save_weights(d, cfg, seed)) if weights else None)
    if verbose:
        print(f"built tiny BERT cross-encoder at {out} in {time.perf_counter() - t0:.1f}s")
    return out


def main(argv: list[str] | None = None) -> int:
    args = builder_parser("python -m dynamo.llm.tiny_bert", __doc__).parse_args(argv)
    return run_build(lambda: build_tiny_bert(args.out, args.seed, args.weights, verbose=True))


if __name__ == "__main__":
    sys.exit(main())

"""Offline, deterministic builder for a tiny LLaVA-style vision-language model directory.

Owns the multimodal layer on top of `dynamo.llm.tiny_model`: the tiny Llama tokenizer plus
one `<image>` special token, a ChatML template that renders image parts as `<image>`, a
`LlavaForConditionalGeneration` config (tiny CLIP vision tower + the "tiny" Llama preset),
the LlavaProcessor / CLIP image-processor files, and (with --weights) random bf16 weights.

    python -m dynamo.llm.tiny_vlm --out /tmp/tiny-vlm [--weights] [--seed 1234]

A 32x32 image in 8x8 patches is 16 patches + CLS; the "default" feature-select strategy
drops CLS, so vLLM expands each `<image>` in a prompt into IMAGE_TOKENS (16) copies.
Two builds produce byte-identical tokenizer and config files; tiny_model's `dynamo_tiny_model.json`
stamp (with "kind": "llava") lets repeated builds into the same directory be skipped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dynamo.llm.tiny_model import (
    PRESETS, _json_bytes, _stamp_matches, builder_parser, generation_config, model_config, run_build,
    write_model_dir,
    read_corpus, special_tokens_map, tokenizer_config, torch_available, train_tokenizer,
)

BUILDER_VERSION = 1
PRESET = "tiny"
IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # CLS dropped by the "default" strategy
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# ChatML; content may be a string, None (tool-call-only turns) or a list of OpenAI-style
# parts: text parts render their text, image / image_url parts render the image token.
VLM_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- elif message['content'] is not none %}"
    "{%- for part in message['content'] %}"
    "{%- if part['type'] == 'text' %}{{- part['text'] }}"
    "{%- elif part['type'] in ['image', 'image_url'] %}{{- '" + IMAGE_TOKEN + "' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def build_tokenizer():
    """The tiny Llama's tokenizer plus `<image>`; returns (tokenizer, image_id, corpus hash)."""
    from tokenizers import AddedToken

    texts, corpus_hash = read_corpus()
    tok = train_tokenizer(texts, PRESETS[PRESET].vocab_size)
    tok.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    image_id = tok.token_to_id(IMAGE_TOKEN)
    if image_id != tok.get_vocab_size() - 1:
        raise RuntimeError(f"{IMAGE_TOKEN} got id {image_id}, expected the last id")
    return tok, image_id, corpus_hash


def vlm_tokenizer_config(image_id: int) -> dict:
    cfg = tokenizer_config(PRESETS[PRESET].max_position_embeddings)
    cfg["chat_template"] = VLM_CHAT_TEMPLATE
    cfg["processor_class"] = "LlavaProcessor"
    cfg["extra_special_tokens"] = {"image_token": IMAGE_TOKEN}
    cfg["added_tokens_decoder"][str(image_id)] = {
        "content": IMAGE_TOKEN, "lstrip": False, "normalized": False, "rstrip": False,
        "single_word": False, "special": True}
    return cfg


def vlm_special_tokens_map() -> dict:
    stm = special_tokens_map()
    stm["additional_special_tokens"] = [*stm["additional_special_tokens"], IMAGE_TOKEN]
    return stm


def vision_config() -> dict:
    return {
        "model_type": "clip_vision_model",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_channels": 3,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "projection_dim": 64,
    }


def vlm_config(image_id: int) -> dict:
    text = model_config(PRESETS[PRESET])
    text["vocab_size"] = image_id + 1  # the trained vocab plus <image>
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": text,
        "vision_config": vision_config(),
        "image_token_index": image_id,
        "image_seq_length": IMAGE_TOKENS,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "multimodal_projector_bias": True,
        "tie_word_embeddings": False,
        "vocab_size": text["vocab_size"],
        "pad_token_id": text["pad_token_id"],
        "torch_dtype": "bfloat16",
        "dtype": "bfloat16",
    }


def preprocessor_config() -> dict:
    return {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "LlavaProcessor",
        "do_resize": True, "size": {"shortest_edge": IMAGE_SIZE}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "do_convert_rgb": True,
    }


def processor_config() -> dict:
    # num_additional_image_tokens=1 (CLS) and "default" (drop CLS) cancel: IMAGE_TOKENS each.
    return {"processor_class": "LlavaProcessor", "image_token": IMAGE_TOKEN, "patch_size": PATCH_SIZE,
            "num_additional_image_tokens": 1, "vision_feature_select_strategy": "default"}


# transformers 5 runtime names -> the llava-hf checkpoint layout that vLLM's loader maps and
# transformers' conversion mapping reads back (save_pretrained drops `vision_model.`, vLLM needs it).
_CHECKPOINT_PREFIXES = [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                        ("model.vision_tower.", "vision_tower.vision_model."),
                        ("model.multi_modal_projector.", "multi_modal_projector.")]


def checkpoint_name(name: str) -> str:
    for src, dst in _CHECKPOINT_PREFIXES:
        if name.startswith(src):
            return dst + name[len(src):].removeprefix("vision_model.")
    raise ValueError(f"unexpected LLaVA parameter {name!r}")


def _save_weights(out: Path, cfg: dict, seed: int) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    skip = {"architectures", "model_type", "torch_dtype", "dtype", "rope_parameters", "rope_scaling"}
    text = LlamaConfig(**{k: v for k, v in cfg["text_config"].items() if k not in skip})
    vision = CLIPVisionConfig(**{k: v for k, v in cfg["vision_config"].items() if k != "model_type"})
    top = {k: cfg[k] for k in ("image_token_index", "image_seq_length", "projector_hidden_act",
                               "vision_feature_layer", "vision_feature_select_strategy")}
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(LlavaConfig(text_config=text, vision_config=vision, **top))
    state = {checkpoint_name(k): v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(dict(sorted(state.items())), str(out / "model.safetensors"), metadata={"format": "pt"})


def _files(tok, image_id: int, cfg: dict) -> dict[str, bytes]:
    return {
        "tokenizer.json": (tok.to_str(pretty=True) + "\n").encode(),
        "tokenizer_config.json": _json_bytes(vlm_tokenizer_config(image_id)),
        "special_tokens_map.json": _json_bytes(vlm_special_tokens_map()),
        "chat_template.jinja": VLM_CHAT_TEMPLATE.encode(),
        "config.json": _json_bytes(cfg),
        "generation_config.json": _json_bytes(generation_config()),
        "preprocessor_config.json": _json_bytes(preprocessor_config()),
        "processor_config.json": _json_bytes(processor_config()),
    }


def build_tiny_vlm(out_dir, seed: int = 1234, weights: bool = False, verbose: bool = False) -> Path:
    """Builds (or reuses) a tiny LLaVA model directory at out_dir and returns its path.

    weights=True needs torch and transformers importable (RuntimeError otherwise).
    """
    if weights and not torch_available():
        raise RuntimeError("--weights needs torch and transformers importable in this Python")
    out = Path(out_dir)
    want = {"kind": "llava", "builder_version": BUILDER_VERSION, "preset": PRESET, "seed": seed, "weights": weights,
            "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE}
    if _stamp_matches(out, want):
        if verbose:
            print(f"tiny VLM already built at {out}")
        return out

    t0 = time.perf_counter()
    tok, image_id, corpus_hash = build_tokenizer()
    cfg = vlm_config(image_id)
    hashes = write_model_dir(out, _files(tok, image_id, cfg),
                             {**want, "corpus_sha256_16": corpus_hash, "image_token_id": image_id},
                             (lambda d: _save_weights(d, cfg, seed)) if weights else None)
    if verbose:
        print(f"built tiny VLM at {out} in {time.perf_counter() - t0:.1f}s (image_token_id {image_id}, "
              f"{IMAGE_TOKENS} tokens/image, tokenizer {hashes['tokenizer.json']}, "
              f"weights {hashes.get('model.safetensors', 'none')})")
    return out


def main(argv: list[str] | None = None) -> int:
    args = builder_parser("python -m dynamo.llm.tiny_vlm", __doc__).parse_args(argv)
    return run_build(lambda: build_tiny_vlm(args.out, args.seed, args.weights, verbose=True))


if __name__ == "__main__":
    sys.exit(main())

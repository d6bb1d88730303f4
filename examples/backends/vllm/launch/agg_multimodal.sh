#!/usr/bin/env bash
# vLLM, aggregated, a vision-language model (same graph as ../deploy/agg_multimodal.yaml, one worker on GPU 0):
# chat requests may carry images, which the worker fetches and decodes (--enable-multimodal).
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}

start_frontend --router-mode kv
start_gpu_worker VllmDecodeWorker-0 dynamo.vllm --model "$MODEL" --enable-multimodal \
  --limit-mm-per-prompt '{"image": 4}' --max-model-len 16384
wait_any

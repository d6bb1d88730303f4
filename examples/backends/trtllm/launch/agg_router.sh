#!/usr/bin/env bash
# TensorRT-LLM, aggregated with KV routing (../deploy/agg_router.yaml).
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
# Needs TensorRT-LLM on a CUDA machine (see ../README.md); `LAUNCH_CHECK=1` prints the commands for checking.
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
ARGS=(--model "$MODEL" --served-model-name "$MODEL")

DYN_ROUTER_MODE=kv start_frontend
for i in 0 1; do
  start_gpu_worker "TrtllmWorker-$i" dynamo.trtllm "${ARGS[@]}" --publish-kv-events
done
wait_any

#!/usr/bin/env bash
# TensorRT-LLM, aggregated (../deploy/agg.yaml).
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
# Needs TensorRT-LLM on a CUDA machine (see ../README.md); `LAUNCH_CHECK=1` prints the commands for checking.
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
ARGS=(--model "$MODEL" --served-model-name "$MODEL")

start_frontend
start_gpu_worker TrtllmWorker-0 dynamo.trtllm "${ARGS[@]}"
wait_any

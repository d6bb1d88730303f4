#!/usr/bin/env bash
# TensorRT-LLM, aggregated (../deploy/agg.yaml).
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
# dynamo.trtllm is not part of this image yet (see ../README.md): this script documents the graph.
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
ARGS=(--model "$MODEL" --served-model-name "$MODEL")

start_frontend
start_gpu_worker TrtllmWorker-0 dynamo.trtllm "${ARGS[@]}"
wait_any

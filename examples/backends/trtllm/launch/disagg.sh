#!/usr/bin/env bash
# TensorRT-LLM, disaggregated (../deploy/disagg.yaml): decode GPU 0, prefill GPU 1.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
# dynamo.trtllm is not part of this image yet (see ../README.md): this script documents the graph.
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
ARGS=(--model "$MODEL" --served-model-name "$MODEL")

start_frontend
start_gpu_worker TrtllmDecodeWorker-0 dynamo.trtllm "${ARGS[@]}" --disaggregation-mode decode
start_gpu_worker TrtllmPrefillWorker-0 dynamo.trtllm "${ARGS[@]}" --disaggregation-mode prefill
wait_any

#!/usr/bin/env bash
# TensorRT-LLM, aggregated with KV routing (../deploy/agg_router.yaml).
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
# dynamo.trtllm is not part of this image yet (see ../README.md): this script documents the graph.
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
ARGS=(--model "$MODEL" --served-model-name "$MODEL")

DYN_ROUTER_MODE=kv start_frontend
for i in 0 1; do
  start_gpu_worker "TrtllmWorker-$i" dynamo.trtllm "${ARGS[@]}" --publish-kv-events
done
wait_any

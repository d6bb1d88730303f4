#!/usr/bin/env bash
# SGLang, aggregated with KV routing (../deploy/agg_router.yaml).
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
# Needs SGLang on a CUDA machine (see ../README.md); `LAUNCH_CHECK=1` prints the commands for checking.
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
ARGS=(--model-path "$MODEL" --served-model-name "$MODEL" --page-size 16 --tp 1 --trust-remote-code)
dis() { echo --disaggregation-mode "$1" --disaggregation-transfer-backend nixl --disaggregation-bootstrap-port "$2" --host 0.0.0.0; }
events() { echo "{\"publisher\":\"zmq\",\"endpoint\":\"tcp://*:$1\"}"; }

DYN_ROUTER_MODE=kv start_frontend
for i in 0 1; do
  start_gpu_worker "SglangDecodeWorker-$i" dynamo.sglang "${ARGS[@]}" --kv-events-config "$(events $((5557 + i)))"
done
wait_any

#!/usr/bin/env bash
# SGLang, disaggregated (../deploy/disagg.yaml): decode GPU 0, prefill GPU 1.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
# Needs SGLang on a CUDA machine (see ../README.md); `LAUNCH_CHECK=1` prints the commands for checking.
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
ARGS=(--model-path "$MODEL" --served-model-name "$MODEL" --page-size 16 --tp 1 --trust-remote-code)
dis() { echo --disaggregation-mode "$1" --disaggregation-transfer-backend nixl --disaggregation-bootstrap-port "$2" --host 0.0.0.0; }
events() { echo "{\"publisher\":\"zmq\",\"endpoint\":\"tcp://*:$1\"}"; }

start_frontend
start_gpu_worker SglangDecodeWorker-0 dynamo.sglang "${ARGS[@]}" $(dis decode 12345)
start_gpu_worker SglangPrefillWorker-0 dynamo.sglang "${ARGS[@]}" $(dis prefill 12345)
wait_any

#!/usr/bin/env bash
# vLLM, aggregated (same graph as ../deploy/agg.yaml): one frontend, one worker on GPU 0.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
KV_TRANSFER='{"kv_connector":"NixlConnector","kv_role":"kv_both"}'
kv_events() { echo "{\"publisher\":\"zmq\",\"topic\":\"kv-events\",\"endpoint\":\"tcp://*:$1\",\"enable_kv_cache_events\":true}"; }

start_frontend
start_gpu_worker VllmDecodeWorker-0 dynamo.vllm --model "$MODEL"
wait_any

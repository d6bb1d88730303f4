#!/usr/bin/env bash
# vLLM, aggregated with KV routing (../deploy/agg_router.yaml): two workers (GPUs 0, 1) publishing KV events.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
KV_TRANSFER='{"kv_connector":"NixlConnector","kv_role":"kv_both"}'
kv_events() { echo "{\"publisher\":\"zmq\",\"topic\":\"kv-events\",\"endpoint\":\"tcp://*:$1\",\"enable_kv_cache_events\":true}"; }

DYN_ROUTER_MODE=kv start_frontend
for i in 0 1; do
  start_gpu_worker "VllmDecodeWorker-$i" dynamo.vllm --model "$MODEL" --kv-events-config "$(kv_events $((20080 + i)))"
done
wait_any

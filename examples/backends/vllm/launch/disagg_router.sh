#!/usr/bin/env bash
# vLLM, disaggregated with KV routing (../deploy/disagg_router.yaml): 2 decode + 2 prefill workers on GPUs 0-3.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
KV_TRANSFER='{"kv_connector":"NixlConnector","kv_role":"kv_both"}'
kv_events() { echo "{\"publisher\":\"zmq\",\"topic\":\"kv-events\",\"endpoint\":\"tcp://*:$1\",\"enable_kv_cache_events\":true}"; }

DYN_ROUTER_MODE=kv start_frontend
for i in 0 1; do
  VLLM_NIXL_SIDE_CHANNEL_PORT=$((20096 + i)) start_gpu_worker "VllmDecodeWorker-$i" dynamo.vllm --model "$MODEL" \
    --is-decode-worker --kv-transfer-config "$KV_TRANSFER"
done
for i in 0 1; do
  VLLM_NIXL_SIDE_CHANNEL_PORT=$((20098 + i)) start_gpu_worker "VllmPrefillWorker-$i" dynamo.vllm --model "$MODEL" \
    --is-prefill-worker --kv-transfer-config "$KV_TRANSFER" --kv-events-config "$(kv_events $((20080 + i)))"
done
wait_any

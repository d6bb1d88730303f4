#!/usr/bin/env bash
# vLLM, disaggregated (../deploy/disagg.yaml): decode on GPU 0, prefill on GPU 1, KV moved with NIXL.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
KV_TRANSFER='{"kv_connector":"NixlConnector","kv_role":"kv_both"}'
kv_events() { echo "{\"publisher\":\"zmq\",\"topic\":\"kv-events\",\"endpoint\":\"tcp://*:$1\",\"enable_kv_cache_events\":true}"; }

start_frontend
VLLM_NIXL_SIDE_CHANNEL_PORT=20096 start_gpu_worker VllmDecodeWorker-0 dynamo.vllm --model "$MODEL" --is-decode-worker --kv-transfer-config "$KV_TRANSFER"
VLLM_NIXL_SIDE_CHANNEL_PORT=20097 start_gpu_worker VllmPrefillWorker-0 dynamo.vllm --model "$MODEL" --is-prefill-worker --kv-transfer-config "$KV_TRANSFER"
wait_any

#!/usr/bin/env bash
# Mocker pools behind a global router (NVIDIA Dynamo's examples/global_planner/local, with our processes):
# two aggregated pools, each a mocker behind its own KV router in its own namespace (agg_pool_0, agg_pool_1);
# the global router (global_router.json) sends each request to the pool its SLA target calls for; the
# frontend, in the global router's namespace only, never sees the pools' workers directly.
#   nvext.router.ttft_target < 500 ms  -> pool 0;  >= 500 ms or none -> pool 1
#   nvext.agent_hints.priority 10..100 -> pool 0 (a priority override)
#   pool 1's router gone               -> its requests go to pool 0 (enable_priority_retry)
# Try: curl localhost:8000/v1/chat/completions -H 'content-type: application/json' -d '{"model":
#      "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "nvext": {"router": {"ttft_target": 100}}}'
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=$(tiny_model_path)
HERE=$(cd "$(dirname "$0")" && pwd)
FRONT_NS=${DYN_NAMESPACE}

for i in 0 1; do  # each pool in its own namespace (a router serves in, and routes within, DYN_NAMESPACE)
  DYN_NAMESPACE=agg_pool_$i start_worker "Mocker-pool$i" dynamo.mocker --model-path "$MODEL" --model-name tiny-llama --speedup-ratio 10 \
    --endpoint "dyn://agg_pool_$i.backend.generate"
  DYN_NAMESPACE=agg_pool_$i start_worker "Router-pool$i" dynamo.router --endpoint "agg_pool_$i.backend.generate" --router-block-size 64
done
# Registers the model once both pools have a router and a worker (--pool-ready-timeout-secs).
start_worker GlobalRouter dynamo.global_router --config "$HERE/global_router.json" --model-name tiny-llama \
  --model-path "$MODEL" --namespace "$FRONT_NS"
start_frontend --namespace "$FRONT_NS"
wait_any

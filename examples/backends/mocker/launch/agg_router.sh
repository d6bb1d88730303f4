#!/usr/bin/env bash
# Mocker, aggregated with KV-aware routing (same graph as ../deploy/agg_router.yaml): two workers
# publishing KV events, frontend in kv router mode.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=$(tiny_model_path)

DYN_ROUTER_MODE=kv start_frontend
for i in 0 1; do
  start_worker "MockerWorker-$i" dynamo.mocker --model-path "$MODEL" --model-name tiny-llama --speedup-ratio 10
done
wait_any

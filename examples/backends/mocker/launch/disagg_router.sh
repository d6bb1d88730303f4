#!/usr/bin/env bash
# Mocker, disaggregated with KV-aware routing (same graph as ../deploy/disagg_router.yaml):
# two decode and two prefill workers, frontend in kv router mode.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=$(tiny_model_path)
ARGS=(--model-path "$MODEL" --model-name tiny-llama --speedup-ratio 10)

DYN_ROUTER_MODE=kv start_frontend
for i in 0 1; do
  start_worker "MockerDecodeWorker-$i" dynamo.mocker "${ARGS[@]}" --is-decode-worker
  start_worker "MockerPrefillWorker-$i" dynamo.mocker "${ARGS[@]}" --is-prefill-worker
done
wait_any

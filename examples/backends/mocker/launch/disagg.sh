#!/usr/bin/env bash
# Mocker, disaggregated (same graph as ../deploy/disagg.yaml): one decode and one prefill worker.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=$(tiny_model_path)
ARGS=(--model-path "$MODEL" --model-name tiny-llama --speedup-ratio 10)

start_frontend
start_worker MockerDecodeWorker-0 dynamo.mocker "${ARGS[@]}" --is-decode-worker
start_worker MockerPrefillWorker-0 dynamo.mocker "${ARGS[@]}" --is-prefill-worker
wait_any

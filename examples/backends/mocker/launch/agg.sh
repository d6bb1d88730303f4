#!/usr/bin/env bash
# Mocker, aggregated (same graph as ../deploy/agg.yaml): one frontend, one mocker worker.
# MODEL_PATH: a local model dir (default: the tiny test model, built on first use).
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=$(tiny_model_path)

start_frontend
start_worker MockerWorker-0 dynamo.mocker --model-path "$MODEL" --model-name tiny-llama --speedup-ratio 10
wait_any

#!/usr/bin/env bash
# vLLM, aggregated, for Triton's and KServe's gRPC clients (same graph as ../deploy/agg_kserve.yaml, one worker on
# GPU 0): the KServe v2 gRPC API on $HTTP_PORT, the HTTP routes (/health, /metrics, OpenAI) on $GRPC_METRICS_PORT.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
GRPC_METRICS_PORT=${GRPC_METRICS_PORT:-8788}

start_frontend --kserve-grpc-server --grpc-metrics-port "$GRPC_METRICS_PORT"
echo "KServe gRPC: 127.0.0.1:$HTTP_PORT (the line above names it http); HTTP routes: http://127.0.0.1:$GRPC_METRICS_PORT"
start_gpu_worker VllmDecodeWorker-0 dynamo.vllm --model "$MODEL"
wait_any

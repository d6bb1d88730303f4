#!/usr/bin/env bash
# vLLM, aggregated, a cross-encoder reranker (same graph as ../deploy/agg_rerank.yaml, one worker on GPU 0):
# POST /v1/rerank, /v2/rerank and /v1/score.
set -euo pipefail
source "$(dirname "$0")/../../../common/launch_lib.sh"
MODEL=${MODEL:-BAAI/bge-reranker-v2-m3}

start_frontend
start_gpu_worker VllmRerankWorker-0 dynamo.vllm --model "$MODEL" --classify-worker --max-model-len 8192
wait_any

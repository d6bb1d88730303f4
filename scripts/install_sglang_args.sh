#!/usr/bin/env bash
# Install SGLang's Python package WITHOUT its CUDA dependencies into the vLLM CPU venv, so
# `dynamo.sglang`'s argument parsing is tested against SGLang's real `ServerArgs` parser.
#
#   scripts/install_sglang_args.sh [VENV]      # default: .venv-vllm (needs torch, which it has)
#
# SGLang cannot serve on these CPU machines (shared/reference/engines-on-cpu.md §4): its
# CPU kernels are not on PyPI. For parsing it needs torch (the vLLM venv's CPU build) and
# three small pure-Python modules imported at package import (orjson, IPython,
# traitlets); triton (~1 GB) is NOT installed: dynamo.sglang.args installs the triton
# stub SGLang ships for Apple Silicon. Cost: ~40 MB download, ~230 MB on disk, ~15 s.
# Idempotent: exits at once when the pinned versions are present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
PY="$VENV/bin/python"
PINS=("sglang==0.5.23" "orjson==3.13.0" "ipython==9.18.1" "traitlets==5.16.1")

if [ ! -x "$PY" ]; then
  echo "[install_sglang_args] no venv at $VENV (run scripts/install_vllm_cpu.sh first)" >&2
  exit 1
fi
if "$PY" - "${PINS[@]}" <<'PYEOF'
import sys
from importlib import metadata
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    try:
        if metadata.version(name) != version:
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
PYEOF
then
  echo "[install_sglang_args] $VENV already has ${PINS[*]}"
  exit 0
fi
echo "[install_sglang_args] ${PINS[*]} (no deps) into $VENV"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "${PINS[@]}"
PYTHONPATH="$ROOT" "$PY" -c "from dynamo.sglang.args import import_server_args; import_server_args(); print('[install_sglang_args] ok: SGLang ServerArgs importable')"

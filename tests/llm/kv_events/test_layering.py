"""Workers and `dynamo.llm` depend on the KV-event contract, never on router internals
(the llm -> frontend edge in preprocessor.py is a separate, known finding)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3] / "dynamo"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_workers_and_llm_never_import_the_router():
    offenders = []
    for package in ("llm", "worker", "mocker", "vllm", "sglang", "trtllm"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _imports(path):
                if name.startswith("dynamo.router"):
                    offenders.append(f"{path.relative_to(ROOT.parent)}: {name}")
    assert not offenders, "\n".join(offenders)
    assert (ROOT / "mocker").is_dir() and (ROOT / "llm" / "kv_events" / "protocol.py").is_file()

"""Checks and derived values the engine workers' args classes (`dynamo.vllm`, `dynamo.sglang`,
`dynamo.trtllm`) share: the `--endpoint-types` list and the request-limit bounds."""

from __future__ import annotations

ENDPOINT_TYPES = ("chat", "completions")


def parse_endpoint_types(endpoint_types: str) -> list[str]:
    """`--endpoint-types` (comma-separated) as a list, blanks dropped."""
    return [t.strip() for t in endpoint_types.split(",") if t.strip()]


def check_limits_and_types(migration_limit: int, engine_request_limit: int, endpoint_types: str) -> None:
    """ValueError unless both limits are >= 0 and `--endpoint-types` names only chat/completions."""
    if migration_limit < 0 or engine_request_limit < 0:
        raise ValueError("--migration-limit and --engine-request-limit must be >= 0")
    types = parse_endpoint_types(endpoint_types)
    bad = set(types) - set(ENDPOINT_TYPES)
    if bad or not types:
        raise ValueError(f"--endpoint-types: unknown {sorted(bad)} (use chat, completions)")

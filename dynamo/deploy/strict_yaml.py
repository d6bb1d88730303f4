"""YAML as the API server decodes a manifest: a mapping that repeats a key is refused (kubectl's strict
decoding reports a duplicate field), where PyYAML would keep the last one silently and drop the rest, a whole
service with it. Every manifest `validate`, `render`, `run` and `apply` read goes through `load_all`."""

from __future__ import annotations

from typing import IO, Any

import yaml
from yaml.constructor import ConstructorError

MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *anchor`: its keys may be overridden, as YAML merges them


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a key twice, naming the key and both lines."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if first is not key_node.start_mark:
                    raise ConstructorError(None, None, f"duplicate key {key!r} (first on line {first.line + 1}); "
                                           "Kubernetes refuses a duplicate field", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_all(stream: str | IO[str]) -> list[Any]:
    """The documents of `stream` (empty ones left out); yaml.YAMLError for bad YAML or a duplicate key."""
    return [doc for doc in yaml.load_all(stream, Loader=StrictLoader) if doc is not None]

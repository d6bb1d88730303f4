"""dynamo: a distributed LLM inference-serving runtime (Python), compatible with
NVIDIA Dynamo's commands, flags, environment variables, key layout and KV events."""

__version__ = "0.1.0"

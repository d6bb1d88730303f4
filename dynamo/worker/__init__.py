"""The worker harness every engine shares (start-up, role, health, drain, metrics, KV relay);
engine packages (`dynamo.mocker`, `dynamo.vllm`, `dynamo.sglang`, `dynamo.trtllm`) supply
only an `EngineAdapter`."""

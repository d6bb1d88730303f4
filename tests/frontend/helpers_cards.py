"""What the card-change tests build by hand: cards told apart by their checksum, a model entry holding given
workers (no pipeline: nothing to tokenize), and a short request."""

from __future__ import annotations

from dynamo.frontend.model_entry import ModelEntry
from dynamo.llm.model_card import ModelDeploymentCard, WorkerType
from dynamo.llm.protocol import PreprocessedRequest, StopConditions
from dynamo.router.policy import WorkerInfo


def card(mdcsum: str, worker_type: WorkerType = WorkerType.DECODE) -> ModelDeploymentCard:
    c = ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096, kv_cache_block_size=16,
                            worker_type=worker_type)
    c.mdcsum = mdcsum
    return c


def model(*workers: WorkerInfo, served: str = "old") -> ModelEntry:
    """Model "m" serving the card `served`, with `workers`."""
    entry = ModelEntry("m", None, card(served))  # type: ignore[arg-type]  # no pipeline: nothing to tokenize
    entry.workers = {w.instance_id: w for w in workers}
    return entry


def request() -> PreprocessedRequest:
    return PreprocessedRequest(request_id="r", model="m", token_ids=list(range(64)),
                               stop_conditions=StopConditions(max_tokens=2))

"""TCP fallback transport for KV blocks between a prefill and a decode worker.

Used where NIXL is absent or cannot connect. Pull model, like vLLM's NixlConnector: the
prefill side stages the request's KV bytes (`KvSender.stage`) and returns metadata of
the same shape as NIXL's `kv_transfer_params` plus `"transport": "tcp"`; the decode side
pulls them (`pull`) over a plain TCP stream, chunked and checksummed (xxh3 per chunk).
The sender holds at most `cap_bytes` (backpressure on `stage`) and drops transfers not
claimed within `ttl_s`. With the request plane's TLS settings (`DYN_TCP_TLS_*`) both sides speak
TLS: the sender with the worker's certificate (demanding client certificates under a client CA),
the puller verifying it against the CA.
"""

from dynamo.kv_transfer.receiver import Pulled, pull
from dynamo.kv_transfer.sender import KvSender
from dynamo.kv_transfer.store import StagingStore, TooLarge
from dynamo.kv_transfer.wire import ChecksumError, TransferError, TransferNotFound

TRANSPORT = "tcp"

__all__ = ["ChecksumError", "KvSender", "Pulled", "StagingStore", "TRANSPORT", "TooLarge", "TransferError",
           "TransferNotFound", "pull"]

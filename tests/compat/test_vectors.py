"""Our code against vectors produced by NVIDIA Dynamo 1.6.1 itself (tests/compat/vectors/,
made by tests/compat/generate_vectors.py in the anchor venv; provenance inside each file).

Byte for byte, nothing normalised:
- LocalBlockHash (every case) and SequenceHash (the block hashes Dynamo's mocker published);
- the KV-event message: our decoder reads Dynamo's four ZMQ frames, and our encoder, given
  the same field values, writes the same four frames (envelope header, msgpack envelope,
  RouterEvent list, externally tagged `stored` data);
- the model-card record: decoding Dynamo's `v1/mdc` record and writing it back gives
  Dynamo's bytes (serde_json's compact form, Dynamo's key order).
Injected, because they are per-run values, not layout: the publisher id, worker id and
`published_at` (a random instance id and the clock).
Normalised when our *own* worker-side card is compared with Dynamo's: `source_path` and
each file's `path` (Dynamo points at its metadata server by URL, ours at the local file;
the file name, blake3 checksum and size must match), and the runtime values a mocker run
reports (block counts, batch limits, runtime_data), which are passed in as Dynamo's.
"""

from __future__ import annotations

import base64
import copy
import functools
import http.server
import json
import struct
import threading
from pathlib import Path

import msgspec
import pytest

from dynamo.llm.card_files import CardFileError, local_model_dir
from dynamo.llm.kv_events.hashing import block_hashes, sequence_hashes
from dynamo.llm.kv_events.protocol import KvCacheEvent, KvStored, RouterEvent, decode_router_events, \
    encode_router_events
from dynamo.llm.model_card import RuntimeConfig, build_card, card_decoder, card_record
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.mocker.kv_manager import KvManager, hash_blocks
from dynamo.runtime.event_plane.base import decode_envelope, encode_envelope
from dynamo.runtime.event_plane.zmq_plane import decode_frames, encode_frames

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"
MODEL = HERE.parent / "fixtures" / "tiny-model"


@functools.cache
def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def test_vectors_come_from_dynamo():
    for name in ("hashes.json", "kv_event.json", "model_card.json"):
        prov = load(name)["provenance"]
        assert prov["ai-dynamo-runtime"] == "1.6.1" and prov["producer"].startswith("NVIDIA Dynamo"), name


def test_local_block_hashes_match_dynamo():
    cases = load("hashes.json")["cases"]
    assert len(cases) >= 6 and any(c.get("lora_name") for c in cases) and any(not c["block_hashes"] for c in cases)
    for case in cases:
        assert block_hashes(case["tokens"], case["block_size"], case.get("lora_name")) == case["block_hashes"], case


# -- KV events ------------------------------------------------------------------------------

def dynamo_frames() -> list[bytes]:
    return [base64.b64decode(f) for f in load("kv_event.json")["frames_b64"]]


def test_our_decoder_reads_dynamos_kv_event():
    frames = dynamo_frames()
    envelope = decode_frames(frames, b"kv-events")
    assert envelope is not None and envelope.topic == "kv-events"
    assert envelope.publisher_id == load("kv_event.json")["channel_record"]["instance_id"]
    assert envelope.sequence == 0 and envelope.published_at > 1_700_000_000_000  # Unix ms
    (event,) = decode_router_events(envelope.payload)
    assert (event.storage_tier, event.residency_domain, event.event.dp_rank) == ("device", "worker", 0)
    stored = event.event.data
    assert isinstance(stored, KvStored) and stored.parent_hash is None and stored.start_position is None
    vec = load("kv_event.json")
    local = block_hashes(vec["prompt_token_ids"], vec["block_size"])
    assert len(local) == 4  # the partial last block is never published
    assert [b.tokens_hash for b in stored.blocks] == local
    assert [b.block_hash for b in stored.blocks] == sequence_hashes(local)
    assert all(b.mm_extra_info is None for b in stored.blocks)


def test_our_encoder_writes_dynamos_kv_event_byte_for_byte():
    frames = dynamo_frames()
    theirs = decode_envelope(frames[3])
    events = decode_router_events(theirs.payload)
    assert encode_router_events(events) == theirs.payload
    assert encode_envelope(theirs) == frames[3]
    assert encode_frames("kv-events", theirs.publisher_id, theirs.sequence, theirs.published_at,
                         encode_router_events(events)) == frames


def test_our_mocker_publishes_the_event_dynamos_mocker_published():
    """Same prompt, same block size: our mocker's KV manager emits Dynamo's bytes
    (worker id, publisher id and timestamp injected from Dynamo's run; the event id is
    ours: both mockers number their first event 1)."""
    vec, frames = load("kv_event.json"), dynamo_frames()
    theirs = decode_envelope(frames[3])
    (their_event,) = decode_router_events(theirs.payload)
    emitted: list[KvCacheEvent] = []
    kv = KvManager(64, vec["block_size"], enable_prefix_caching=True, on_event=emitted.append)
    local, seqs = hash_blocks(vec["prompt_token_ids"], vec["block_size"])
    assert kv.acquire(seqs, local)
    (ours,) = emitted
    payload = encode_router_events([RouterEvent(worker_id=their_event.worker_id, event=ours)])
    assert payload == theirs.payload
    assert encode_frames("kv-events", theirs.publisher_id, 0, theirs.published_at, payload) == frames


def test_decoder_refuses_what_is_not_dynamos_layout():
    frames = dynamo_frames()
    assert decode_frames(frames[:3], b"kv-events") is None
    assert decode_frames([b"kv_metrics", *frames[1:]], b"kv-events") is None
    assert decode_frames([frames[0], frames[1], struct.pack(">Q", 7), frames[3]], b"kv-events") is None
    for broken in (frames[3][:4], b"\x02" + frames[3][1:], frames[3][:-1]):
        with pytest.raises((ValueError, msgspec.DecodeError)):
            decode_envelope(broken)
    old_internal_tag = msgspec.msgpack.encode([{"worker_id": 1, "event": {"event_id": 0, "data": {
        "type": "stored", "parent_hash": None, "blocks": []}}}])
    with pytest.raises(msgspec.ValidationError):
        decode_router_events(old_internal_tag)


def test_cleared_and_removed_events_use_serde_external_tags():
    from dynamo.llm.kv_events.protocol import KvCleared, KvRemoved

    removed = RouterEvent(worker_id=5, event=KvCacheEvent(event_id=2, data=KvRemoved(block_hashes=[2**64 - 1])))
    cleared = RouterEvent(worker_id=5, event=KvCacheEvent(event_id=3, data=KvCleared()))
    raw = msgspec.msgpack.decode(encode_router_events([removed, cleared]))
    assert raw[0]["event"]["data"] == {"removed": {"block_hashes": [2**64 - 1]}}
    assert raw[1]["event"]["data"] == "cleared"  # a unit variant is its bare name
    back = decode_router_events(encode_router_events([removed, cleared]))
    assert back == [removed, cleared]


def test_event_channel_advert_follows_dynamos_key_and_record():
    from dynamo.runtime.event_plane.base import channel_key
    from dynamo.runtime.event_plane.zmq_plane import ChannelTransport, EventChannel, ZmqConfig, channel_scope

    vec = load("kv_event.json")
    record = vec["channel_record"]
    key = channel_key("dynamo", "backend", "kv-events", record["instance_id"], "generate")
    assert key == vec["channel_key"].replace("%2F", "/").replace("%2D", "-")
    ours = EventChannel(channel_scope("dynamo", "backend", "generate"), "kv-events", record["instance_id"],
                        ChannelTransport("Zmq", ZmqConfig(record["transport"]["config"]["endpoint"])))
    assert msgspec.json.encode(ours) == json.dumps(record, separators=(",", ":")).encode()
    assert msgspec.json.decode(json.dumps(record), type=EventChannel) == ours


# -- model card -----------------------------------------------------------------------------

def dynamo_record() -> dict:
    return copy.deepcopy(load("model_card.json")["record"])


def compact(obj) -> bytes:
    """serde_json's compact form, which is how Dynamo writes the record."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def test_dynamos_card_record_reads_back_and_rewrites_byte_for_byte():
    rec = dynamo_record()
    card = card_decoder.decode(compact(rec))
    assert (card.display_name, card.slug, card.kv_cache_block_size, card.context_length) == ("tiny", "tiny", 4, 2048)
    assert card.model_type == ["chat", "completions"] and card.model_input == "tokens"
    assert card.worker_type == "aggregated" and card.runtime_config.publishes_kv_events is True
    assert card.runtime_config.enable_local_indexer and card.runtime_config.total_kv_blocks == 16384
    assert sorted(card.files) == ["hf_chat_template", "hf_config_json", "hf_generation_config_json",
                                  "hf_tokenizer_config_json", "hf_tokenizer_json"]
    assert card_record(card, rec["namespace"], rec["component"], rec["endpoint"], rec["instance_id"]) == compact(rec)


def test_our_worker_card_is_dynamos_layout():
    """Built from the same model directory, our card is Dynamo's record: same keys in the
    same order, same blake3 checksums and sizes; only per-run values are normalised."""
    rec = dynamo_record()
    theirs = rec["card_json"]
    rc = RuntimeConfig(context_length=0, total_kv_blocks=16384, max_num_seqs=256, max_num_batched_tokens=8192,
                       enable_local_indexer=True, publishes_kv_events=True,
                       runtime_data={"output_replay_consumer": True})
    card = build_card(MODEL, name="tiny", block_size=4, runtime_config=rc)
    ours = json.loads(card_record(card, "dynamo", "backend", "generate", rec["instance_id"]))
    ours["card_json"]["source_path"] = theirs["source_path"]
    for entry, their_entry in zip(files_of(ours["card_json"]), files_of(theirs)):
        assert Path(entry["path"]).name == Path(their_entry["path"]).name
        assert Path(entry["path"]).parent == MODEL.resolve()
        entry["path"] = their_entry["path"]
    assert len(files_of(ours["card_json"])) == len(files_of(theirs)) == 6
    assert compact(ours) == compact(rec)


def files_of(card: dict) -> list[dict]:
    return [card["model_info"]["hf_config_json"], card["tokenizer"]["hf_tokenizer_json"],
            card["prompt_formatter"]["hf_tokenizer_config_json"], card["chat_template_file"]["hf_chat_template"]["file"],
            card["gen_config"]["hf_generation_config_json"], *card.get("extra_files", [])]


def test_card_checksum_tracks_the_files_not_their_location():
    rec = dynamo_record()
    theirs = card_decoder.decode(compact(rec))
    ours = build_card(MODEL, name="tiny", block_size=4)
    assert ours.mdcsum == theirs.mdcsum  # same bytes, one served by URL, one on disk
    other = build_card(MODEL, name="tiny", block_size=8)
    assert other.mdcsum != ours.mdcsum


@pytest.fixture
def metadata_server():
    """Serves the fixture model's files where Dynamo's worker served them (/v1/metadata/...)."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path):
            return str(MODEL / Path(path).name)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_frontend_builds_its_pipeline_from_a_card_dynamos_worker_wrote(metadata_server, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    raw = compact(dynamo_record()).replace(b"http://127.0.0.1:27529", metadata_server.encode())
    card = card_decoder.decode(raw)
    pipeline = ModelPipeline(card)  # fetches the files by URL, checks blake3 and size
    local = ModelPipeline(build_card(MODEL, name="tiny", block_size=4))
    text = "Hello from a Dynamo card"
    assert pipeline.tokenizer.encode(text) == local.tokenizer.encode(text)
    assert (local_model_dir(card) / "special_tokens_map.json").read_bytes() == \
        (MODEL / "special_tokens_map.json").read_bytes()


def test_a_card_file_that_differs_from_its_checksum_is_refused(metadata_server, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    rec = dynamo_record()
    rec["card_json"]["tokenizer"]["hf_tokenizer_json"]["checksum"] = "blake3:" + "0" * 64
    card = card_decoder.decode(compact(rec).replace(b"http://127.0.0.1:27529", metadata_server.encode()))
    with pytest.raises(CardFileError):
        local_model_dir(card)

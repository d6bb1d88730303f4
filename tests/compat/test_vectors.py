"""Our code against vectors produced by NVIDIA Dynamo 1.6.1 itself (tests/compat/vectors/,
made by tests/compat/generate_vectors.py in the anchor venv; provenance inside each file).

Byte-for-byte: LocalBlockHash (every case) and SequenceHash (the external block hashes
Dynamo's own mocker publishes in its KV event). The KV-event envelope and the model card
are read with Dynamo's field names, so the hashes and the card fields we share are checked
against what Dynamo really emitted. Our event and card *layouts* differ from these records
(Dynamo tags event data externally inside an envelope; its card nests file entries with
blake3 checksums): the vectors are here for whoever aligns them.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import msgspec

from dynamo.llm.model_card import build_card
from dynamo.llm.kv_events.hashing import block_hashes, sequence_hashes

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"
MODEL = HERE.parent / "fixtures" / "tiny-model"


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


def dynamo_kv_event() -> tuple[list[bytes], dict, list]:
    """Dynamo's ZMQ event-plane frames: [topic, publisher id u64 BE, sequence u64 BE, envelope];
    the envelope is a 5-byte header then a msgpack map whose `payload` holds the RouterEvents."""
    vec = load("kv_event.json")
    frames = [base64.b64decode(f) for f in vec["frames_b64"]]
    envelope = msgspec.msgpack.decode(frames[3][5:])
    return frames, envelope, msgspec.msgpack.decode(envelope["payload"])


def test_sequence_hashes_match_the_block_hashes_dynamo_publishes():
    vec = load("kv_event.json")
    frames, envelope, events = dynamo_kv_event()
    assert frames[0] == b"kv-events" and envelope["topic"] == "kv-events"
    assert struct.unpack(">Q", frames[1])[0] == envelope["publisher_id"]
    (event,) = events
    stored = event["event"]["data"]["stored"]
    assert stored["parent_hash"] is None
    local = block_hashes(vec["prompt_token_ids"], vec["block_size"])
    assert len(local) == 4  # the partial last block is never published
    assert [b["tokens_hash"] for b in stored["blocks"]] == local
    assert [b["block_hash"] for b in stored["blocks"]] == sequence_hashes(local)


def test_model_card_fields_we_share_with_dynamo():
    record = load("model_card.json")["record"]
    dyn = record["card_json"]
    ours = build_card(MODEL, name="tiny", block_size=4)
    assert record["type"] == "Model" and (record["namespace"], record["component"], record["endpoint"]) == \
        ("dynamo", "backend", "generate")
    assert (ours.display_name, ours.slug) == (dyn["display_name"], dyn["slug"])
    assert ours.kv_cache_block_size == dyn["kv_cache_block_size"] == 4
    assert ours.migration_limit == dyn["migration_limit"]
    assert ours.worker_type == dyn["worker_type"] == "aggregated"
    assert ours.context_length == dyn["architectural_max_context_length"] == 2048
    # Dynamo's card names the same five files we send, and their sizes are those of our fixture model.
    dyn_files = {"hf_config_json": dyn["model_info"]["hf_config_json"],
                 "hf_tokenizer_json": dyn["tokenizer"]["hf_tokenizer_json"],
                 "hf_tokenizer_config_json": dyn["prompt_formatter"]["hf_tokenizer_config_json"],
                 "hf_chat_template": dyn["chat_template_file"]["hf_chat_template"]["file"],
                 "hf_generation_config_json": dyn["gen_config"]["hf_generation_config_json"]}
    assert set(ours.files) == set(dyn_files)
    for key, entry in dyn_files.items():
        assert Path(ours.files[key]).stat().st_size == entry["size"], key
        assert entry["path"].endswith("/" + Path(ours.files[key]).name), key


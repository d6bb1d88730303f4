"""Produce the compatibility vectors in `tests/compat/vectors/` with NVIDIA Dynamo itself.

Run with the anchor venv's Python (scripts/install_anchor_dynamo.sh; not needed by the
tests, which only read the committed JSON):

    .venv-anchor/bin/python tests/compat/generate_vectors.py MODEL_DIR

MODEL_DIR is the repository's own fixture model (`tests/fixtures/tiny-model/`), so the tests can
rebuild the same card from the same bytes. What it records, and from which Dynamo code:
- hashes.json: `dynamo.llm.compute_block_hash_for_seq` (LocalBlockHash per full block).
- kv_event.json: the raw ZMQ frames of Dynamo's KV-event publisher, as emitted by the
  `python -m dynamo.mocker` worker (its external block hashes are Dynamo's SequenceHashes)
  for a token-id prompt sent through `python -m dynamo.frontend`.
- model_card.json: the `v1/mdc/...` record that mocker's `register_model` writes to the
  file discovery store, plus the instance record beside it.
Everything runs on 127.0.0.1 with the file discovery backend.
"""

from __future__ import annotations

import base64
import glob
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

OUT = Path(__file__).resolve().parent / "vectors"
BLOCK = 4
PROMPT = [6 + (i * 37) % 4000 for i in range(4 * BLOCK + 3)]  # 4 full blocks and a partial one
HASH_CASES = [
    {"tokens": list(range(1, 9)), "block_size": 4},
    {"tokens": list(range(1, 9)), "block_size": 4, "lora_name": "my-adapter"},
    {"tokens": [0, 4294967295, 7, 65536] * 8, "block_size": 16},
    {"tokens": [6 + (i * 101) % 50000 for i in range(130)], "block_size": 32},
    {"tokens": PROMPT, "block_size": BLOCK},
    {"tokens": [1, 2, 3], "block_size": 4},
]


def provenance() -> dict:
    return {"producer": "NVIDIA Dynamo (PyPI)", "ai-dynamo": importlib.metadata.version("ai-dynamo"),
            "ai-dynamo-runtime": importlib.metadata.version("ai-dynamo-runtime"),
            "python": platform.python_version(), "generator": "tests/compat/generate_vectors.py",
            "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def hashes() -> dict:
    from dynamo.llm import compute_block_hash_for_seq

    cases = []
    for case in HASH_CASES:
        got = compute_block_hash_for_seq(case["tokens"], case["block_size"], lora_name=case.get("lora_name"))
        cases.append({**case, "block_hashes": [int(h) for h in got]})
    return {"provenance": {**provenance(), "function": "dynamo.llm.compute_block_hash_for_seq"}, "cases": cases}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def cluster_vectors(model_dir: str) -> tuple[dict, dict]:
    import zmq

    tmp = tempfile.mkdtemp(prefix="dynamo-vectors-")
    kv_dir = os.path.join(tmp, "kv")
    http_port, system_port = free_port(), free_port() % 30000 + 2000
    env = {**os.environ, "DYN_FILE_KV": kv_dir, "DYN_TCP_RPC_HOST": "127.0.0.1", "DYN_EVENT_PLANE_HOST": "127.0.0.1",
           "DYN_TCP_RESPONSE_STREAM_HOST": "127.0.0.1", "DYN_SYSTEM_HOST": "127.0.0.1", "DYN_LOG": "warn"}
    logs = [open(os.path.join(tmp, n), "wb") for n in ("mocker.log", "frontend.log")]
    procs = [subprocess.Popen([sys.executable, "-m", "dynamo.mocker", "--model-path", model_dir, "--model-name", "tiny",
                               "--discovery-backend", "file", "--speedup-ratio", "1000", "--block-size", str(BLOCK)],
                              env={**env, "DYN_SYSTEM_PORT": str(system_port)}, stdout=logs[0], stderr=subprocess.STDOUT),
             subprocess.Popen([sys.executable, "-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port",
                               str(http_port), "--discovery-backend", "file", "--router-mode", "kv"],
                              env=env, stdout=logs[1], stderr=subprocess.STDOUT)]
    ctx = zmq.Context()
    try:
        channel = wait(lambda: glob.glob(f"{kv_dir}/v1/event_channels/*kv%2Devents*"), 60, "kv-events channel")
        advert = json.loads(Path(channel[0]).read_text())
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(advert["transport"]["config"]["endpoint"])
        time.sleep(1.0)  # ZMQ slow joiner: the SUB connection must be up before the event is published
        wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/models", timeout=2).read().count(b"tiny"),
             60, "frontend to list the model")
        body = json.dumps({"model": "tiny", "prompt": PROMPT, "max_tokens": 1}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/completions", body,
                                     {"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        frames = None
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and frames is None:
            if poller.poll(500):
                got = sub.recv_multipart()
                if b"stored" in got[-1] or len(got[-1]) > 40:
                    frames = got
        if frames is None:
            raise SystemExit("no KV event captured")
        card_file = glob.glob(f"{kv_dir}/v1/mdc/*")[0]
        instance_file = [p for p in glob.glob(f"{kv_dir}/v1/instances/*") if "generate" in p and "kv_query" not in p
                         and "kv%5Fquery" not in p][0]
        kv_event = {"provenance": {**provenance(), "emitter": "python -m dynamo.mocker (Dynamo's KvEventPublisher), "
                                   "ZMQ event plane with --discovery-backend file",
                                   "request": "POST /v1/completions {prompt: token ids, max_tokens: 1} via "
                                   "python -m dynamo.frontend --router-mode kv"},
                    "block_size": BLOCK, "prompt_token_ids": PROMPT,
                    "channel_key": os.path.relpath(channel[0], kv_dir), "channel_record": advert,
                    "frames_b64": [base64.b64encode(f).decode() for f in frames]}
        card = {"provenance": {**provenance(), "writer": "python -m dynamo.mocker --model-path tests/fixtures/tiny-model "
                               f"--model-name tiny --block-size {BLOCK} (register_model, file discovery store)"},
                "key": os.path.relpath(card_file, kv_dir), "record": json.loads(Path(card_file).read_text()),
                "instance_key": os.path.relpath(instance_file, kv_dir),
                "instance_record": json.loads(Path(instance_file).read_text()),
                "model_dir_as_given": model_dir}
        return kv_event, card
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        ctx.destroy(linger=0)


def main() -> None:
    model_dir = sys.argv[1]
    OUT.mkdir(exist_ok=True)
    (OUT / "hashes.json").write_text(json.dumps(hashes(), indent=1) + "\n")
    kv_event, card = cluster_vectors(model_dir)
    (OUT / "kv_event.json").write_text(json.dumps(kv_event, indent=1) + "\n")
    (OUT / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()

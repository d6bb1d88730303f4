"""OpenAI's Files and Batch APIs with the official `openai` client against a real frontend and a mocker
worker: upload a JSONL file, run it as a batch, poll it, download the output and error files (in input
order, each answer what the endpoint itself answers); a malformed input fails the batch naming its lines;
a cancelled batch keeps what ran; overload answers are retried instead of failing requests; the store's
bound is a 413; with --batch-store-mb 0 the routes are not served; with --batch-dir a killed frontend's
successor runs its batch on."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DONE = ("completed", "failed", "expired", "cancelled")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model):
    cluster = Cluster(tmp_path_factory.mktemp("batch"), tiny_model)
    try:
        cluster.mocker("--speedup-ratio", "10")
        # Two frontends on one worker: the main one, and one whose own concurrency limit (1) makes batch
        # requests (4 at a time) meet 529s, and whose store holds 1 MB.
        cluster.frontend("--batch-concurrency", "4", "--rejection-frontend-request-concurrency-limit", "1",
                         "--batch-store-mb", "1")
        limited = cluster.base_url
        cluster.frontend("--batch-concurrency", "4")
        cluster.wait_workers("tiny", 1)
        yield cluster, limited
    finally:
        cluster.stop()


@pytest.fixture()
def client(stack):
    return openai.OpenAI(base_url=stack[0].base_url + "/v1", api_key="unused", max_retries=0)


def chat_line(custom_id: str, content: str, **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **body}}


def upload(client: openai.OpenAI, lines: list, purpose: str = "batch"):
    data = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()
    return client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose=purpose)


def wait_done(client: openai.OpenAI, batch_id: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in DONE:
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout} s")


def jsonl(client: openai.OpenAI, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_runs_every_request_and_writes_output_and_errors_in_input_order(client):
    lines = [chat_line(f"req-{i}", f"question {i}") for i in range(12)]
    lines.insert(5, chat_line("empty", "x") | {"body": {"model": "tiny", "messages": [], "max_tokens": 4}})
    lines.append(chat_line("streamed", "y", stream=True))
    source = upload(client, lines)
    assert source.purpose == "batch" and source.bytes > 0 and source.filename == "requests.jsonl"
    batch = client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"job": "nightly"})
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"job": "nightly"}
    batch = wait_done(client, batch.id)
    assert batch.status == "completed" and batch.completed_at and batch.in_progress_at
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (14, 12, 2)
    assert batch.model == "tiny" and batch.usage.output_tokens == 12 * 4 and batch.usage.input_tokens > 0
    output = jsonl(client, batch.output_file_id)
    assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(12)]
    for entry in output:
        assert entry["error"] is None and entry["response"]["status_code"] == 200
        answer = entry["response"]["body"]
        assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] == 4
        assert answer["choices"][0]["message"]["role"] == "assistant"
    errors = {e["custom_id"]: e["response"] for e in jsonl(client, batch.error_file_id)}
    assert errors["empty"]["status_code"] == 400 and errors["empty"]["body"]["error"]["param"] == "messages"
    assert errors["streamed"]["status_code"] == 400 and errors["streamed"]["body"]["error"]["param"] == "stream"
    assert all(len(e["request_id"]) == 32 for e in errors.values())  # the refused stream's too
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    assert batch.id in [b.id for b in client.batches.list()]
    scraped = http_get(str(client.base_url).removesuffix("/v1/") + "/metrics")[1].decode()
    assert metric_value(scraped, "dynamo_frontend_batches", {"status": "completed"}) >= 1
    assert metric_value(scraped, "dynamo_frontend_batch_store_bytes") >= source.bytes


def test_a_completions_batch_without_failures_has_no_error_file(client):
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": "tiny", "prompt": f"say {i}", "max_tokens": 3}} for i in range(3)]
    batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/completions",
                                  completion_window="24h")
    batch = wait_done(client, batch.id)
    assert batch.status == "completed" and batch.error_file_id is None
    assert [o["response"]["body"]["object"] for o in jsonl(client, batch.output_file_id)] == ["text_completion"] * 3


def test_a_responses_batch_answers_response_objects(client):
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
              "body": {"model": "tiny", "input": f"hello {i}", "max_output_tokens": 3, "store": False}}
             for i in range(2)]
    batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/responses",
                                  completion_window="24h")
    batch = wait_done(client, batch.id)
    answers = [o["response"]["body"] for o in jsonl(client, batch.output_file_id)]
    assert batch.status == "completed" and [a["object"] for a in answers] == ["response"] * 2
    assert batch.usage.output_tokens == 6 and batch.usage.input_tokens == sum(a["usage"]["input_tokens"] for a in answers)


def test_a_malformed_input_fails_the_batch_naming_each_bad_line(client):
    good = chat_line("a", "hi")
    nested = '{"custom_id": "d", "method": "POST", "url": "/v1/chat/completions", "body": ' + "[" * 3000 + "]" * 3000 + "}"
    lines = [good, "{not json", chat_line("a", "again"), good | {"custom_id": "b", "url": "/v1/completions"},
             good | {"custom_id": "c", "method": "GET"}, {"method": "POST", "url": "/v1/chat/completions", "body": {}},
             nested]
    batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    batch = wait_done(client, batch.id)
    assert batch.status == "failed" and batch.failed_at and batch.output_file_id is None
    found = {(e.line, e.code) for e in batch.errors.data}
    assert found == {(2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_url"), (5, "invalid_method"),
                     (6, "missing_required_parameter"), (7, "invalid_json_line")}  # 7: nested too deeply to parse


def test_refusals_are_openai_errors(client):
    lines = [chat_line("a", "hi")]
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    source = upload(client, lines)
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        client.batches.create(input_file_id=source.id, endpoint="/v1/audio/speech", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="1h")
    for metadata in ({"k" * 65: "v"}, {"k": "v" * 513}):  # OpenAI's bounds: keys of 64 characters, values of 512
        with pytest.raises(openai.BadRequestError, match="metadata"):
            client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata=metadata)
    other = upload(client, lines, purpose="user_data")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.batches.create(input_file_id=other.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        upload(client, lines, purpose="batch_output")  # written by batches, not uploaded
    client.files.delete(other.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(other.id)
    base = str(client.base_url).rstrip("/")
    status, body = http_get(base + "/files?limit=0")
    assert status == 400 and json.loads(body)["error"]["param"] == "limit"
    status, body = http_get(base + "/files?order=sideways")
    assert status == 400 and json.loads(body)["error"]["param"] == "order"
    paths = json.loads(http_get(base.removesuffix("/v1") + "/openapi.json")[1])["paths"]
    assert {"/v1/files", "/v1/files/{file_id}", "/v1/batches", "/v1/batches/{batch_id}/cancel"} <= set(paths)


def test_files_expire_as_their_policy_says(client):
    """OpenAI's expiry policies as the official client sends them: an upload's `expires_after` (a form
    field), a batch's `output_expires_after` for the files it writes; 30 days by default for batch files."""
    lines = [chat_line("a", "hi")]
    source = upload(client, lines)
    assert source.expires_at == source.created_at + 30 * 24 * 3600
    assert upload(client, lines, purpose="user_data").expires_at is None
    hour = {"anchor": "created_at", "seconds": 3600}
    short = client.files.create(file=("r.jsonl", io.BytesIO(b"{}")), purpose="user_data", expires_after=hour)
    assert short.expires_at == short.created_at + 3600 and client.files.retrieve(short.id).expires_at == short.expires_at
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("r.jsonl", io.BytesIO(b"{}")), purpose="batch",
                            expires_after={"anchor": "created_at", "seconds": 60})
    assert refused.value.body["param"] == "expires_after.seconds"
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h",
                              output_expires_after={"anchor": "completed_at", "seconds": 3600})
    assert refused.value.body["param"] == "output_expires_after.anchor"
    batch = client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  output_expires_after={"anchor": "created_at", "seconds": 7200})
    output = client.files.retrieve(wait_done(client, batch.id).output_file_id)
    assert output.purpose == "batch_output" and output.expires_at == output.created_at + 7200


def test_cancel_keeps_what_ran_and_refuses_a_finished_batch(client):
    lines = [chat_line(f"slow-{i}", "tell me a long story", max_tokens=150, ignore_eos=True) for i in range(40)]
    source = upload(client, lines)
    batch = client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_until(lambda: client.batches.retrieve(batch.id).status == "in_progress", 60, "batch in progress")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    with pytest.raises(openai.BadRequestError, match="still running"):
        client.files.delete(source.id)  # the input of a batch that has not ended
    batch = wait_done(client, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    ran = jsonl(client, batch.output_file_id)
    assert 0 < len(ran) < 40 and batch.request_counts.completed == len(ran)  # the in-flight ones finished
    assert all(o["response"]["status_code"] == 200 for o in ran)
    with pytest.raises(openai.APIStatusError) as refused:
        client.batches.cancel(batch.id)
    assert refused.value.status_code == 409
    client.files.delete(source.id)


def test_overload_answers_are_retried_not_failed(stack):
    cluster, limited = stack
    client = openai.OpenAI(base_url=limited + "/v1", api_key="unused", max_retries=0)
    lines = [chat_line(f"r{i}", f"q{i}", max_tokens=20, ignore_eos=True) for i in range(12)]
    batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    batch = wait_done(client, batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 12 and batch.error_file_id is None
    status, body = http_get(limited + "/metrics")
    assert metric_value(body.decode(), "dynamo_frontend_model_rejection_total", {"reason": "overloaded"}) > 0  # 529s met


def test_the_store_bound_is_a_413(stack):
    client = openai.OpenAI(base_url=stack[1] + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", io.BytesIO(b"x" * (2 << 20))), purpose="batch")
    assert refused.value.status_code == 413 and refused.value.body["code"] == "file_too_large"


def test_without_a_store_the_routes_are_not_served(tmp_path, tiny_model):
    cluster = Cluster(tmp_path, tiny_model)
    try:
        cluster.frontend("--batch-store-mb", "0")
        assert http_get(cluster.base_url + "/v1/batches")[0] == 404
        status, body = http_get(cluster.base_url + "/openapi.json")
        assert status == 200 and "/v1/batches" not in json.loads(body)["paths"]
    finally:
        cluster.stop()


def test_with_a_batch_dir_a_killed_frontend_restarts_its_batches_where_they_were(tmp_path, tiny_model):
    """--batch-dir: the frontend is SIGKILLed mid-batch; a new one on the same folder serves the files and the
    ended batch, and runs the interrupted batch on: every request answered once in the output, the answers
    from before the crash kept (by their ids)."""
    cluster = Cluster(tmp_path, tiny_model)
    folder = tmp_path / "batches"
    try:
        cluster.mocker("--speedup-ratio", "10")
        first = cluster.frontend("--batch-dir", str(folder), "--batch-concurrency", "2")
        cluster.wait_workers("tiny", 1)
        client = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="unused", max_retries=0)
        ended = client.batches.create(input_file_id=upload(client, [chat_line("x", "hi")]).id,
                                      endpoint="/v1/chat/completions", completion_window="24h")
        ended = wait_done(client, ended.id)
        lines = [chat_line(f"r{i}", f"q{i}", max_tokens=60, ignore_eos=True) for i in range(24)]
        source = upload(client, lines)
        batch = client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 4, 120, "4 answered")
        journal = (folder / "batches" / f"{batch.id}.results").read_text().splitlines()
        before = {e["entry"]["custom_id"]: e["entry"]["id"] for e in map(json.loads, journal)}
        first.kill()
        cluster.frontend("--batch-dir", str(folder), "--batch-concurrency", "2")
        client = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="unused", max_retries=0)
        assert client.batches.retrieve(ended.id).status == "completed"
        assert client.files.content(ended.output_file_id).text.count("\n") == 1
        assert client.files.retrieve(source.id).bytes == source.bytes
        batch = wait_done(client, batch.id)
        assert batch.status == "completed" and (batch.request_counts.total, batch.request_counts.completed) == (24, 24)
        output = jsonl(client, batch.output_file_id)
        assert [o["custom_id"] for o in output] == [f"r{i}" for i in range(24)]
        assert before and all({o["custom_id"]: o["id"] for o in output}[cid] == rid for cid, rid in before.items())
        assert batch.usage.output_tokens == 24 * 60
        assert not (folder / "batches" / f"{batch.id}.results").exists()
    finally:
        cluster.stop()

"""The Batch API's pieces that need no server: multipart uploads, the file store's bound, pages and
expiry, an input file's line checks, a batch's usage, and the runner's expiry (driven through a minimal ASGI
app: the runner's contract is the ASGI interface the frontend's app serves)."""

from __future__ import annotations

import asyncio
import codecs
import json
import time

import pytest

from dynamo.frontend.batch_files import MAX_EXPIRY_SECS, FileStore, expiry_secs, parse_multipart
from dynamo.frontend.batch_jobs import Batch, parse_lines
from dynamo.frontend.batch_journal import BatchJournal
from dynamo.frontend import batch_runner
from dynamo.frontend.batch_runner import BatchRunner
from dynamo.frontend.errors import ApiError

BOUNDARY = "----form7"


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_multipart_fields_keep_their_bytes_exactly():
    content = b'{"a": 1}\r\n{"b": 2}\n--not-a-boundary\n'
    fields = parse_multipart(f"multipart/form-data; boundary={BOUNDARY}",
                             form(("purpose", None, b"batch"), ("file", "in.jsonl", content)))
    assert fields == {"purpose": (None, b"batch"), "file": ("in.jsonl", content)}


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data"])
def test_not_a_form_is_a_400(content_type):
    with pytest.raises(ApiError) as refused:
        parse_multipart(content_type, b"{}")
    assert refused.value.status == 400 and refused.value.param == "file"


@pytest.mark.parametrize("body", [b"", form(("purpose", None, b"batch"))[:-12]])  # empty; cut before its end
def test_an_empty_or_cut_off_form_is_named_malformed(body):
    with pytest.raises(ApiError) as refused:
        parse_multipart(f"multipart/form-data; boundary={BOUNDARY}", body)
    assert (refused.value.status, refused.value.code) == (400, "invalid_multipart")
    assert "closing boundary" in refused.value.message


def test_a_batch_line_keeps_its_body_as_sent_and_reads_its_model_and_stream():
    body = '{"model": "tiny", "stream": false, "messages": [{"role": "user", "content": "é \\"q\\" \\u00e9 😀"}]}'
    line = f'{{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {body}}}'.encode()
    [parsed], errors = parse_lines(codecs.BOM_UTF8 + line + b"\r\n", "/v1/chat/completions")  # a BOM, CRLF
    assert errors == [] and parsed.body == body.encode() and (parsed.model, parsed.stream) == ("tiny", False)
    bad = [line.replace("😀".encode(), b"\xff"), line.replace(body.encode(), b'"text"'), b'["a"]']  # \xff: in the prompt
    _, errors = parse_lines(b"\n".join(bad), "/v1/chat/completions")
    assert [(e["line"], e["code"]) for e in errors] == [(1, "invalid_json_line"), (2, "missing_required_parameter"),
                                                        (3, "invalid_json_line")]


def test_the_store_bound_counts_every_file_and_frees_on_delete():
    store = FileStore(100)
    first = store.add("a", "batch", b"x" * 60)
    with pytest.raises(ApiError) as refused:
        store.add("b", "batch", b"x" * 41)
    assert refused.value.status == 413
    store.delete(first.id)
    assert store.add("b", "batch", b"x" * 100).object()["bytes"] == 100
    with pytest.raises(ApiError) as missing:
        store.get(first.id)
    assert missing.value.status == 404


def test_files_expire_by_policy_or_their_purposes_default():
    store = FileStore(1 << 20)
    source, data, output = (store.add("in", "batch", b"x"), store.add("d", "user_data", b"x"),
                            store.add("out", "batch_output", b"x", expires_after=3600))
    assert source.expires_at == source.created_at + MAX_EXPIRY_SECS  # OpenAI's 30 days for batch inputs
    assert data.expires_at is None and data.object()["expires_at"] is None  # other purposes: kept until deleted
    assert output.object()["expires_at"] == output.created_at + 3600


def test_an_expired_file_is_gone_everywhere_and_its_bytes_freed_unless_a_running_batch_needs_it():
    store = FileStore(100)
    dropped, needed = [], set()
    store.on_drop, store.in_use = dropped.append, needed.__contains__
    old, busy = store.add("old", "batch", b"x" * 40, expires_after=3600), store.add("busy", "batch", b"x" * 40)
    old.expires_at = busy.expires_at = int(time.time()) - 1  # both past their time
    needed.add(busy.id)
    with pytest.raises(ApiError) as missing:
        store.get(old.id)
    assert missing.value.status == 404 and store.get(busy.id) is busy
    assert [f.id for f in store.listed(None, "asc", None, 10)[0]] == [busy.id]  # listed: not the expired one
    assert [f.id for f in store.listed(None, "asc", old.id, 10)[0]] == [busy.id]  # its place still pages on
    new = store.add("new", "batch", b"x" * 60)  # fits only because the expired file's bytes were freed
    assert dropped == [old.id] and store.bytes == 100 and store.get(new.id) is new
    needed.clear()
    store.expire()
    assert dropped == [old.id, busy.id] and store.bytes == 60


@pytest.mark.parametrize("anchor, seconds, param", [
    ("last_active_at", 3600, "expires_after.anchor"), ("created_at", 3599, "expires_after.seconds"),
    ("created_at", MAX_EXPIRY_SECS + 1, "expires_after.seconds"), ("created_at", "an hour", "expires_after.seconds"),
    ("created_at", None, "expires_after.seconds"), (None, 3600, "expires_after.anchor"),
    ("created_at", True, "expires_after.seconds")])
def test_a_bad_expiry_policy_is_a_400_naming_its_field(anchor, seconds, param):
    with pytest.raises(ApiError) as refused:
        expiry_secs(anchor, seconds, "expires_after")
    assert refused.value.status == 400 and refused.value.param == param


def test_an_expiry_policy_gives_its_seconds_from_a_form_or_json():
    assert expiry_secs(None, None, "expires_after") is None
    assert expiry_secs("created_at", "7200", "expires_after") == 7200  # a multipart field is text
    assert expiry_secs("created_at", MAX_EXPIRY_SECS, "output_expires_after") == MAX_EXPIRY_SECS


def test_file_pages_follow_after_and_order():
    store = FileStore(1 << 20)
    ids = [store.add(str(i), "batch" if i % 2 == 0 else "user_data", b"x").id for i in range(5)]
    page, more = store.listed(None, "asc", None, 2)
    assert [f.id for f in page] == ids[:2] and more
    page, more = store.listed(None, "asc", ids[1], 10)
    assert [f.id for f in page] == ids[2:] and not more
    page, _ = store.listed("batch", "desc", None, 10)
    assert [f.id for f in page] == [ids[4], ids[2], ids[0]]


def line(custom_id: str, url: str = "/v1/completions", **extra) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": {"prompt": "x"}, **extra}).encode()


def test_lines_are_read_and_blank_lines_skipped():
    lines, errors = parse_lines(b"\n".join([line("a"), b"", line("b"), b"  "]), "/v1/completions")
    assert errors == [] and [x.custom_id for x in lines] == ["a", "b"]


def test_every_bad_line_is_named_with_its_number():
    data = b"\n".join([line("a"), b"[1, 2]", line("a"), line("c", "/v1/embeddings"), line("d", body="text")])
    _, errors = parse_lines(data, "/v1/completions")
    assert [(e["line"], e["code"]) for e in errors] == [(2, "invalid_json_line"), (3, "duplicate_custom_id"),
                                                        (4, "invalid_url"), (5, "missing_required_parameter")]
    assert parse_lines(b"\n\n", "/v1/completions")[1][0]["code"] == "empty_file"


def test_usage_adds_chat_and_responses_names():
    batch = Batch("batch_1", "/v1/chat/completions", "file-1", "24h", None)
    batch.count_usage({"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}})
    batch.count_usage({"input_tokens": 5, "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 1}})
    batch.count_usage(None)
    assert batch.object()["usage"] == {"input_tokens": 15, "input_tokens_details": {"cached_tokens": 4},
                                       "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 1},
                                       "total_tokens": 20}


def test_requests_not_sent_within_the_window_expire():
    async def app(scope, receive, send):  # answers every request at once
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"usage": {"prompt_tokens": 1}}'})

    async def run() -> tuple[Batch, FileStore]:
        files = FileStore(1 << 20)
        source = files.add("in.jsonl", "batch", b"\n".join([line("a"), line("b")]))
        runner = BatchRunner(app, files, 1)
        batch = Batch("batch_1", "/v1/completions", source.id, "24h", None)
        batch.created_at = int(time.time()) - 24 * 3600  # its window already over
        runner.start(batch)
        await asyncio.wait_for(asyncio.gather(*runner.tasks.values()), 10)
        return batch, files

    batch, files = asyncio.run(run())
    assert batch.status == "expired"
    assert batch.object()["expired_at"] and batch.object()["request_counts"] == {"total": 2, "completed": 0,
                                                                                 "failed": 2}
    expired = [json.loads(x) for x in files.get(batch.error_file_id).data.splitlines()]
    assert [(e["custom_id"], e["error"]["code"], e["response"]) for e in expired] == [("a", "batch_expired", None),
                                                                                     ("b", "batch_expired", None)]


def test_the_journal_reads_back_files_batches_and_answers_but_not_a_torn_last_line(tmp_path):
    journal = BatchJournal(tmp_path)
    stored = FileStore(1 << 20).add("in.jsonl", "batch", b'{"x": 1}\n')
    journal.save_file(stored)
    batch = Batch("batch_1", "/v1/completions", stored.id, "24h", {"k": "v"}, status="in_progress", total=3,
                  output_expires_secs=7200)
    journal.save_batch(batch)
    journal.append_result(batch.id, 2, {"custom_id": "c"})
    journal.close()
    with open(tmp_path / "batches" / "batch_1.results", "a") as out:
        out.write('{"index": 0, "entry": {"cus')  # the crash cut this one short: that request runs again
    again = BatchJournal(tmp_path)
    [(restored, answered)] = again.load_batches()
    assert restored == batch and answered == {2: {"custom_id": "c"}}
    [file] = again.load_files()
    assert (file.id, file.filename, file.data, file.expires_at) == (stored.id, "in.jsonl", b'{"x": 1}\n',
                                                                    stored.expires_at)
    again.drop_file(stored.id)
    again.drop_results(batch.id)
    assert again.load_files() == [] and again.load_batches() == [(batch, {})]


def test_past_the_record_bound_the_oldest_ended_batches_go_and_running_ones_stay(monkeypatch, tmp_path):
    monkeypatch.setattr(batch_runner, "MAX_BATCHES", 3)
    journal = BatchJournal(tmp_path)
    runner = BatchRunner(None, FileStore(1), 1, journal)
    for i, status in enumerate(("completed", "in_progress", "failed")):
        runner.batches[f"b{i}"] = Batch(f"b{i}", "/v1/completions", "f", "24h", None, created_at=i, status=status)
        journal.save_batch(runner.batches[f"b{i}"])
    assert runner.make_room() and sorted(runner.batches) == ["b1", "b2"]
    assert [b.id for b, _ in journal.load_batches()] == ["b1", "b2"]
    runner.batches["b3"] = Batch("b3", "/v1/completions", "f", "24h", None, created_at=3, status="validating")
    assert runner.make_room() and sorted(runner.batches) == ["b1", "b3"]
    runner.batches["b4"] = Batch("b4", "/v1/completions", "f", "24h", None, created_at=4, status="in_progress")
    assert not runner.make_room()  # all three running: a 429 for the next


def test_a_resumed_batch_whose_input_is_gone_fails_saying_so(tmp_path):
    async def run() -> Batch:
        runner = BatchRunner(None, FileStore(1 << 20), 1, BatchJournal(tmp_path))
        batch = Batch("batch_1", "/v1/completions", "file-gone", "24h", None, status="in_progress")
        runner.start(batch, {}, lambda model: True)
        await asyncio.wait_for(asyncio.gather(*runner.tasks.values()), 10)
        return batch

    batch = asyncio.run(run())
    assert batch.status == "failed" and batch.errors[0]["code"] == "missing_input_file"
    assert BatchJournal(tmp_path).load_batches()[0][0].status == "failed"  # written down as it ended

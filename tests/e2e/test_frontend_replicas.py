"""Frontend replicas behind one address answer for each other's stored objects (replicas.py): two real
frontends and a mocker on file discovery, the official `openai` client calling the "wrong" replica each
time, as a load balancer would send it: a Response continued, read, listed and deleted through the
replica that did not make it (streaming too); a file uploaded to one, a batch created, polled and its
output read through the other; and a replica that is gone is the 404 it would be on one frontend."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, tiny_model):
    cluster = Cluster(tmp_path_factory.mktemp("replicas"), tiny_model)
    try:
        cluster.mocker("--speedup-ratio", "10")
        urls = []
        for _ in range(2):
            cluster.frontend()
            urls.append(cluster.base_url)
        cluster.wait_workers("tiny", 1)
        yield cluster, [openai.OpenAI(base_url=u + "/v1", api_key="unused", max_retries=0) for u in urls], urls
    finally:
        cluster.stop()


def test_a_response_continues_and_reads_through_the_other_replica(replicas):
    _, (a, b), urls = replicas
    first = a.responses.create(model="tiny", input="Remember the number 7.", max_output_tokens=8)
    follow = b.responses.create(model="tiny", input="Which number?", previous_response_id=first.id,
                                max_output_tokens=8)
    assert follow.status in ("completed", "incomplete") and follow.id != first.id
    assert follow.id[5:17] == first.id[5:17]  # the owner ran it: the new response carries its tag
    assert b.responses.retrieve(first.id).id == first.id
    items = b.responses.input_items.list(follow.id)
    assert [i.content[0].text for i in items.data if i.type == "message"] == ["Which number?"]
    events = [e.type for e in b.responses.create(model="tiny", input="Again?", previous_response_id=follow.id,
                                                 max_output_tokens=8, stream=True)]
    assert events[0] == "response.created" and events[-1] in ("response.completed", "response.incomplete")
    assert b.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(first.id)
    forwarded = metric_value(http_get(urls[1] + "/metrics")[1].decode(), "dynamo_frontend_replica_forwarded_requests_total",
                             {"kind": "resp_"})
    assert forwarded >= 5  # continued twice, read, listed, deleted: each through B to A


def test_a_client_that_leaves_a_forwarded_stream_stops_it_on_the_owner(replicas):
    _, (a, _), urls = replicas
    first = a.responses.create(model="tiny", input="Start a long story.", max_output_tokens=8)

    def cut() -> float:
        return metric_value(http_get(urls[0] + "/metrics")[1].decode(), "dynamo_frontend_disconnected_clients") or 0

    before = cut()
    with httpx.stream("POST", urls[1] + "/v1/responses", timeout=60, json={
            "model": "tiny", "input": "Go on, at length.", "previous_response_id": first.id, "stream": True,
            "max_output_tokens": 1500, "nvext": {"ignore_eos": True}}) as resp:
        assert resp.status_code == 200
        next(resp.iter_lines())  # the stream runs on the owner (A), relayed by B; then this client goes
    wait_until(lambda: cut() > before, 30, "the owner to see its client (the relay) go")


def test_a_file_uploaded_to_one_replica_runs_as_a_batch_through_the_other(replicas):
    _, (a, b), _ = replicas
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "tiny", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4}}
             for i in range(3)]
    source = a.files.create(file=("in.jsonl", io.BytesIO("\n".join(map(json.dumps, lines)).encode())),
                            purpose="batch")
    assert b.files.retrieve(source.id).bytes == source.bytes
    batch = b.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id[6:18] == source.id[5:17]  # created where its input is
    deadline = time.monotonic() + 60
    while b.batches.retrieve(batch.id).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
    done = b.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    output = [json.loads(line) for line in b.files.content(done.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["r0", "r1", "r2"]
    assert batch.id in [x.id for x in a.batches.list().data]  # lists are each replica's own
    assert batch.id not in [x.id for x in b.batches.list().data]
    b.files.delete(source.id)
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(source.id)


def test_an_id_of_a_replica_that_is_gone_is_a_404(replicas):
    cluster, (a, _), urls = replicas
    extra = cluster.frontend()
    gone = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="unused", max_retries=0)
    made = gone.responses.create(model="tiny", input="hi", max_output_tokens=4)
    assert a.responses.retrieve(made.id).id == made.id
    extra.stop()
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(made.id)
    with pytest.raises(openai.BadRequestError) as refused:
        a.responses.create(model="tiny", input="more", previous_response_id=made.id, max_output_tokens=4)
    assert refused.value.body["code"] == "previous_response_not_found"
    assert http_get(urls[0] + "/health")[0] == 200


def test_a_replica_killed_before_its_record_expires_is_a_404_not_a_500(replicas):
    cluster, (a, _), _ = replicas
    killed = cluster.frontend()
    made = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="unused", max_retries=0).responses.create(
        model="tiny", input="hi", max_output_tokens=4)
    killed.kill()  # no goodbye: its discovery record outlives it until the lease expires
    killed.popen.wait(30)  # dead, its sockets closed (a connection to it while it died was reset, not refused)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(made.id)


def test_a_replica_restarted_on_its_batch_dir_answers_for_what_it_made_before(replicas, tmp_path):
    """--batch-dir: the successor reads back files made under its predecessor's tag, and registers that
    tag too, so the other replicas still reach them."""
    cluster, (a, _), _ = replicas
    folder = str(tmp_path / "batches")
    first = cluster.frontend("--batch-dir", folder)
    made = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="unused", max_retries=0).files.create(
        file=("in.jsonl", io.BytesIO(b"{}")), purpose="user_data")
    first.kill()
    cluster.frontend("--batch-dir", folder)
    assert a.files.retrieve(made.id).bytes == made.bytes


def test_a_request_forwarded_to_a_hung_replica_is_a_503_once_its_lease_lapses(replicas):
    """A replica that hangs (SIGSTOP) still accepts the relay's connection, and nothing answers: once its
    discovery lease lapses (here 2 s) the forwarded request is a 503 naming the replica, not a wait that
    lasts as long as the client's patience; the replica that relayed it stays healthy."""
    cluster, (a, _), urls = replicas
    hung = cluster.frontend(env={"ETCD_LEASE_TTL": "2"})
    made = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="unused", max_retries=0).responses.create(
        model="tiny", input="hi", max_output_tokens=4)
    hung.freeze()
    try:
        started = time.monotonic()
        resp = httpx.get(urls[0] + f"/v1/responses/{made.id}", timeout=60)
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "replica_unreachable"
        assert time.monotonic() - started < 45
        assert http_get(urls[0] + "/health")[0] == 200
    finally:
        hung.thaw()
        hung.kill()

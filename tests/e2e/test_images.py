"""Images in chat requests, end to end with the official `openai` client: a frontend, two mocker
workers of a tiny vision-language model started with --enable-multimodal (they fetch and decode each
image as a vision worker does), and a text-only model beside them. What is checked: images reach the
worker (fetched once from a real HTTP server), every bad reference is a 4xx naming it (at the frontend
when it can judge, else from the worker), a text-only model refuses them, and KV-aware routing shares
a prompt's blocks before its image but never another image's blocks after it."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest
from PIL import Image

from dynamo.llm.tiny_vlm import build_tiny_vlm
from tests.fixtures.procs import Cluster

pytestmark = pytest.mark.e2e

VLM, TEXT = "vlm", "tiny"
SYSTEM = "You describe pictures for a museum catalogue. " * 40  # several KV blocks before the image


def png(color) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


RED, BLUE = data_url(png((255, 0, 0))), data_url(png((0, 0, 255)))


class ImageServer:
    """A real HTTP server on loopback: /cat.png is a PNG, anything else 404; counts requests by path."""

    def __init__(self) -> None:
        hits: dict[str, int] = {}
        body = png((10, 200, 10))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server calls it by this name
                hits[self.path] = hits.get(self.path, 0) + 1
                ok = self.path == "/cat.png"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", str(len(body) if ok else 0))
                self.end_headers()
                if ok:
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.hits = hits
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    vlm_dir = build_tiny_vlm(tmp / "tiny-vlm")
    server = ImageServer()
    c = Cluster(tmp, vlm_dir, "file")
    try:
        for _ in range(2):  # workers may fetch from loopback (the test's image server)
            c.mocker("--speedup-ratio", "100", "--enable-multimodal", model_name=VLM, env={"DYN_MM_ALLOW_INTERNAL": "1"})
        c.model_dir = tiny_model
        c.mocker("--speedup-ratio", "100", model_name=TEXT)
        c.frontend("--router-mode", "kv", "--enable-anthropic-api", env={"DYN_MM_MAX_DATA_URL_MB": "1"})
        c.strict_url = c.base_url  # type: ignore[attr-defined]  # the default policy: https and data: only
        c.frontend("--router-mode", "kv", env={"DYN_MM_ALLOW_INTERNAL": "1"})
        c.wait_workers(VLM, 2)
        c.wait_workers(TEXT, 1)
        c.images = server  # type: ignore[attr-defined]
        yield c
    finally:
        c.stop()
        server.close()


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0, timeout=60)


def ask(url: str, text: str = "What is in this picture?", system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": [{"type": "text", "text": text},
                                                    {"type": "image_url", "image_url": {"url": url}}]}]


def test_an_image_chat_is_answered_streamed_and_not(cluster):
    api = client(cluster.strict_url)
    done = api.chat.completions.create(model=VLM, messages=ask(RED), max_tokens=8)
    assert done.choices[0].finish_reason in ("stop", "length") and done.usage.completion_tokens > 0
    text_only = api.chat.completions.create(model=VLM, messages=[{"role": "user", "content": "What is in this "
                                                                  "picture?"}], max_tokens=8)
    assert done.usage.prompt_tokens == text_only.usage.prompt_tokens + 1  # the one <image> placeholder
    chunks = list(api.chat.completions.create(model=VLM, messages=ask(BLUE), max_tokens=8, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_the_responses_and_messages_apis_carry_images(cluster):
    """Responses `input_image` parts and Anthropic `image` blocks reach the worker as chat image parts do."""
    response = client(cluster.strict_url).responses.create(model=VLM, max_output_tokens=4, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                     {"type": "input_image", "image_url": RED}]}])
    assert response.status in ("completed", "incomplete") and response.usage.output_tokens > 0
    claude = anthropic.Anthropic(base_url=cluster.strict_url, api_key="x", max_retries=0)
    message = claude.messages.create(model=VLM, max_tokens=4, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": BLUE.split(",", 1)[1]}},
        {"type": "text", "text": "What is this?"}]}])
    assert message.usage.output_tokens > 0
    with pytest.raises(anthropic.BadRequestError, match="takes text only"):
        claude.messages.create(model=TEXT, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}])


def test_the_worker_fetches_an_image_url_once(cluster):
    api, server = client(cluster.base_url), cluster.images
    for _ in range(3):
        api.chat.completions.create(model=VLM, messages=ask(server.url + "/cat.png"), max_tokens=4)
    assert 1 <= server.hits["/cat.png"] <= 2  # each worker keeps it once fetched
    with pytest.raises(openai.BadRequestError, match="image 0: fetching it answered HTTP 404"):
        api.chat.completions.create(model=VLM, messages=ask(server.url + "/gone.png"), max_tokens=4)


@pytest.mark.parametrize("url, status, says", [
    ("http://127.0.0.1:9/cat.png", 400, "http:// image URLs are not allowed"),
    ("https://169.254.169.254/latest/meta-data", 400, "private or internal"),
    ("file:///etc/passwd", 400, "scheme 'file' is not allowed"),
    ("data:text/plain;base64,aGk=", 400, "must be an image in base64"),
    ("data:image/png;base64," + "A" * (1 << 20), 413, "DYN_MM_MAX_DATA_URL_MB"),
])
def test_the_frontend_refuses_what_it_can_judge(cluster, url, status, says):
    with pytest.raises(openai.APIStatusError, match=says) as info:
        client(cluster.strict_url).chat.completions.create(model=VLM, messages=ask(url), max_tokens=4)
    assert info.value.status_code == status
    assert info.value.body["param"] == "messages[0].content[1].image_url.url"


def test_the_worker_refuses_an_unreadable_image(cluster):
    with pytest.raises(openai.BadRequestError, match="image 0: not a readable image"):
        client(cluster.strict_url).chat.completions.create(
            model=VLM, messages=ask(data_url(b"GIF89a but not really")), max_tokens=4)


def test_a_text_only_model_refuses_images(cluster):
    with pytest.raises(openai.BadRequestError, match="takes text only") as info:
        client(cluster.strict_url).chat.completions.create(model=TEXT, messages=ask(RED), max_tokens=4)
    assert info.value.body["param"] == "messages[0].content[1].image_url.url"
    with pytest.raises(openai.BadRequestError, match="input_audio"):
        client(cluster.strict_url).chat.completions.create(
            model=VLM, messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {
                "data": "AAAA", "format": "wav"}}]}], max_tokens=4)


def test_kv_routing_shares_the_text_before_an_image_not_another_images_blocks(cluster):
    """The same system prompt and image again: routed to the worker that cached it, which reuses nearly all
    of it. Another image after the same system prompt: only the blocks before the image are reused."""
    api = client(cluster.strict_url)

    def cached(image: str, text: str) -> tuple[int, int]:
        done = api.chat.completions.create(model=VLM, messages=ask(image, text, SYSTEM), max_tokens=2)
        return done.usage.prompt_tokens, (done.usage.prompt_tokens_details.cached_tokens or 0)

    total, first = cached(RED, "Describe it.")
    assert first == 0
    again = cached(RED, "Describe it.")[1]
    other = cached(BLUE, "Describe it.")[1]
    system_blocks = len(SYSTEM.split()) // 2  # a lower bound on the tokens before the image, well over 2 blocks
    assert again >= total - 64  # all but the partial last block
    assert 64 <= other < again and other >= (system_blocks // 64) * 64 - 64

"""Images on a real engine: one `dynamo.vllm --enable-multimodal` worker serving a tiny random-weight
LLaVA model (`dynamo.llm.tiny_vlm`, CLIP tower + the tiny Llama; each `<image>` becomes 16 tokens in
vLLM) behind a KV-routing frontend, driven by the official `openai` client. Checked: the images reach
the model (greedy answers differ by image), two images per prompt, vLLM's own limit and an unreadable
image are 400s, and vLLM's prefix cache reuses a prompt's text before its image but nothing of another
image (what the router's media-salted hashes assume)."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from dynamo.llm.tiny_vlm import IMAGE_TOKENS
from tests.fixtures.procs import REPO
from tests.vllm.conftest import MODEL, VllmCluster, build_model, wait_healthy
from tests.vllm.vision_shim import write_vision_shim

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.timeout(1500)]

SYSTEM = "You describe pictures for a museum catalogue in one short sentence. " * 12  # blocks before the image
AFTER = " Mention its colours, its shapes and what it might be used for. " * 6  # full blocks after it


def data_url(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


RED = data_url(Image.new("RGB", (32, 32), (255, 0, 0)))
NOISE = data_url(Image.frombytes("RGB", (32, 32), bytes((i * 97 + 13) % 256 for i in range(32 * 32 * 3))))


@pytest.fixture(scope="module")
def vlm_model(vllm_python, tmp_path_factory):
    return build_model(vllm_python, tmp_path_factory, "tiny_vlm")


@pytest.fixture(scope="module")
def cluster(vllm_python, vlm_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-images")
    shim = write_vision_shim(tmp / "shim")
    c = VllmCluster(tmp, vlm_model, vllm_python)
    try:
        worker = c.vllm_worker("--enable-multimodal", "--limit-mm-per-prompt", '{"image": 2}',
                               env={"PYTHONPATH": f"{shim}:{REPO}"}, wait=False)
        wait_healthy(worker, timeout=900)
        c.frontend("--router-mode", "kv")
        c.wait_workers(MODEL, 1, timeout=120)
        yield c
    finally:
        c.stop()


def api(cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0, timeout=300)


def ask(*images: str, text: str = "What is in the picture?", system: str | None = None, after: str = "") -> list[dict]:
    parts = [{"type": "text", "text": text}, *({"type": "image_url", "image_url": {"url": u}} for u in images),
             *([{"type": "text", "text": after}] if after else [])]
    return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": parts}]


def greedy(cluster, messages: list[dict], max_tokens: int = 8):
    return api(cluster).chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0,
                                               logprobs=True)


def test_the_image_reaches_the_model(cluster):
    red, noise = greedy(cluster, ask(RED)), greedy(cluster, ask(NOISE))
    assert greedy(cluster, ask(RED)).choices[0].logprobs == red.choices[0].logprobs  # greedy: repeatable
    assert red.choices[0].logprobs != noise.choices[0].logprobs  # same text, another picture: another answer


def test_two_images_in_one_prompt_and_vllms_limit(cluster):
    both = greedy(cluster, ask(RED, NOISE))
    swapped = greedy(cluster, ask(NOISE, RED))
    assert both.usage.completion_tokens > 0 and both.choices[0].logprobs != swapped.choices[0].logprobs
    # usage counts the images' tokens as the engine does (each placeholder becomes IMAGE_TOKENS)
    text_only = greedy(cluster, ask())
    assert both.usage.prompt_tokens == text_only.usage.prompt_tokens + 2 * IMAGE_TOKENS
    with pytest.raises(openai.BadRequestError, match="(?i)at most 2"):
        greedy(cluster, ask(RED, NOISE, RED))


def test_an_unreadable_image_is_a_400(cluster):
    bad = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()
    with pytest.raises(openai.BadRequestError, match="image 0: not a readable image"):
        greedy(cluster, ask(bad))
    assert greedy(cluster, ask(RED)).usage.completion_tokens > 0  # the worker serves on


def test_vllm_reuses_the_text_before_an_image_not_another_images_blocks(cluster):
    def cached(image: str) -> int:
        done = greedy(cluster, ask(image, text="Describe it.", system=SYSTEM, after=AFTER), max_tokens=2)
        return done.usage.prompt_tokens_details.cached_tokens or 0

    first, again, other = cached(RED), cached(RED), cached(NOISE)
    assert first == 0 and again > other > 0, (first, again, other)

"""A worker's image loader (dynamo.worker.media_loader) against a real HTTP server on loopback:
data: URLs decoded, URLs fetched within the size cap and deadline, answers cached by URL and
fetched once for concurrent requests, and every failure a MediaError naming the image."""

from __future__ import annotations

import asyncio
import base64
import io
import random

import pytest
from aiohttp import web
from PIL import Image

from dynamo.llm.media import MediaError, MediaPolicy
from dynamo.worker.media_loader import (
    B64_CHUNK, MAX_REQUEST_PIXELS, ImageLoader, PublicOnlyResolver, decode_data_url,
)


def png(width: int = 7, height: int = 5, color=(200, 30, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


@pytest.fixture
async def server():
    """Paths: /cat.png, /big.png (a Content-Length over the cap), /stream (chunked, no length, over the cap),
    /slow.png (answers after 1.5 s), /text (not an image), anything else 404. `hits` counts requests by path."""
    hits: dict[str, int] = {}
    body = png()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        hits[path] = hits.get(path, 0) + 1
        if path == "/cat.png":
            await asyncio.sleep(0.05)  # concurrent loads overlap
            return web.Response(body=body, content_type="image/png")
        if path == "/big.png":
            return web.Response(body=b"\0" * 4096, content_type="image/png")
        if path == "/stream":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(8):
                await resp.write(b"\0" * 1024)
            return resp
        if path == "/slow.png":
            await asyncio.sleep(1.5)
            return web.Response(body=body)
        if path == "/text":
            return web.Response(text="not an image")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", hits
    await runner.cleanup()


@pytest.fixture
async def loader():
    made = []

    def make(**policy) -> ImageLoader:
        made.append(ImageLoader(MediaPolicy(**{"allow_internal": True, **policy})))
        return made[-1]

    yield make
    for one in made:
        await one.close()


async def test_data_urls_decode_to_rgb_images(loader):
    grey = io.BytesIO()
    Image.new("L", (3, 2), 90).save(grey, format="PNG")
    images = await loader().load([data_url(png()), data_url(grey.getvalue())])
    assert [(i.size, i.mode) for i in images] == [((7, 5), "RGB"), ((3, 2), "RGB")]


def bomb() -> bytes:
    """A PNG of a few kilobytes whose pixels would take 150 MB."""
    out = io.BytesIO()
    Image.new("1", (10000, 5000)).save(out, format="PNG")
    return out.getvalue()


def test_data_urls_decode_a_chunk_at_a_time_as_whole():
    for n in (0, 1, 2, 3, B64_CHUNK // 4 * 3, B64_CHUNK // 4 * 3 + 1, 2 * B64_CHUNK + 5):
        raw = random.Random(n).randbytes(n)
        assert decode_data_url(data_url(raw)) == raw, n
    padded = base64.b64encode(b"x" * (B64_CHUNK // 4 * 3 - 1)).decode()  # "=" ends the first chunk
    for bad in ("data:image/png;base64,abc", "data:image/png;base64,ab=c", "data:image/png;base64," + padded + "AAAA"):
        with pytest.raises(MediaError, match="base64 is invalid"):
            decode_data_url(bad)


@pytest.mark.parametrize("url, status, says", [
    ("data:image/png;base64,***", 400, "base64"),
    (data_url(bomb()), 413, "10000x5000 pixels, over the 40,000,000-pixel limit"),
    (data_url(b"hello, not a picture"), 415, "not a readable image"),
    ("data:image/png;base64," + base64.b64encode(png()[:40]).decode(), 415, "not a readable image"),
])
async def test_bad_data_urls(loader, url, status, says):
    with pytest.raises(MediaError, match=says) as info:
        await loader().load([url])
    assert info.value.status == status


async def test_a_requests_images_share_one_pixel_budget(server, loader):
    """Each image under the per-image cap, together over the request's: refused before the rest decode;
    the next request has its own budget."""
    out = io.BytesIO()
    Image.new("1", (6000, 6000)).save(out, format="PNG")  # 36 M pixels, a few KB
    big = data_url(out.getvalue())
    images = loader()
    count = MAX_REQUEST_PIXELS // 36_000_000 + 1
    with pytest.raises(MediaError, match="together") as info:
        await images.load([big] * count)
    assert info.value.status == 413
    assert len(await images.load([big] * (count - 1))) == count - 1


async def test_fetched_once_then_cached(server, loader):
    base, hits = server
    images = loader()
    first = await asyncio.gather(*(images.load([base + "/cat.png"]) for _ in range(4)))
    assert hits["/cat.png"] == 1 and all(batch[0].size == (7, 5) for batch in first)
    again = await images.load([base + "/cat.png", data_url(png(2, 2))])
    assert hits["/cat.png"] == 1 and [i.size for i in again] == [(7, 5), (2, 2)]
    uncached = loader(cache_size=0)
    await uncached.load([base + "/cat.png"])
    await uncached.load([base + "/cat.png"])
    assert hits["/cat.png"] == 3


@pytest.mark.parametrize("path, status, says", [
    ("/missing.png", 400, "HTTP 404"), ("/big.png", 413, "4096 bytes"), ("/stream", 413, "over the 2048-byte limit"),
    ("/slow.png", 408, "no answer within 0.3 s"), ("/text", 415, "not a readable image"),
])
async def test_fetch_failures_name_the_image(server, loader, path, status, says):
    base, _ = server
    with pytest.raises(MediaError, match=says) as info:
        await loader(max_file_bytes=2048, fetch_timeout_secs=0.3).load([data_url(png()), base + path])
    assert info.value.status == status and str(info.value).startswith("image 1: ")


async def test_a_failed_fetch_is_not_cached(server, loader):
    base, hits = server
    images = loader(fetch_timeout_secs=0.5)
    for _ in range(2):
        with pytest.raises(MediaError):
            await images.load([base + "/missing.png"])
    assert hits["/missing.png"] == 2


async def test_the_strict_policy_never_reaches_loopback(server):
    base, hits = server
    strict = ImageLoader(MediaPolicy())
    try:
        for url in (base + "/cat.png", base.replace("http:", "https:") + "/cat.png",
                    "https://localhost/cat.png"):
            with pytest.raises(MediaError, match="not allowed|private|internal"):
                await strict.load([url])
    finally:
        await strict.close()
    assert hits == {}


async def test_the_resolver_drops_internal_answers():
    """A public-looking name that resolves to loopback: refused when the connection is made."""
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="private or internal"):
            await resolver.resolve("localhost", 443)
    finally:
        await resolver.close()

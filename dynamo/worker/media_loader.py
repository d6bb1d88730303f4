"""A worker's images: from the references a request's `multi_modal_data` carries to decoded RGB
images for its engine. `data:` URLs are decoded here; `https://` (and, when allowed, `http://`) URLs
are fetched with a size cap and a deadline, through a resolver that refuses private and internal
addresses (checked at connect time, so a name that changes its answer cannot slip past), and the
last few are kept by URL. Every failure is a `MediaError` (a client error) naming the image.

Decoding runs off the event loop: a large image takes tens of milliseconds, and other requests'
streams must not wait for it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import socket
import threading
from collections import OrderedDict
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from dynamo.llm.media import MediaError, MediaPolicy, check_reference, is_blocked_ip, media_key

CHUNK = 64 * 1024
# A few hundred bytes of PNG can decode to gigabytes of pixels: refused from the header, before decoding
# (vision models resize far below this; PIL's own bomb check allows about 179 million).
MAX_PIXELS = 40_000_000
# All of one request's images together (hundreds of small files could add up to gigabytes decoded).
MAX_REQUEST_PIXELS = 100_000_000


class PixelBudget:
    """The pixels a request's images may still decode to; taken from each image's header, before decoding
    (from any thread: data: URLs decode on the default executor)."""

    def __init__(self, total: int = MAX_REQUEST_PIXELS) -> None:
        self.total = self.left = total
        self._lock = threading.Lock()

    def take(self, width: int, height: int, label: str) -> None:
        with self._lock:
            if width * height > self.left:
                raise MediaError(f"{label}: {width}x{height} pixels would take the request's images over "
                                 f"{self.total:,} pixels together", 413)
            self.left -= width * height


class PublicOnlyResolver(AbstractResolver):
    """DNS answers with every private or internal address dropped (none left: the host is refused)."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if not is_blocked_ip(r["host"])]
        if not allowed:
            raise OSError(f"host {host!r} resolves only to private or internal addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def decode_image(data: bytes, label: str, budget: PixelBudget | None = None) -> Any:
    """RGB PIL image from encoded bytes, its pixels taken from `budget`; MediaError when they are not an
    image PIL reads or there are too many of them."""
    from PIL import Image  # imported where used: text-only workers never pay for it

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only: the size is known before decoding
            if image.width * image.height > MAX_PIXELS:
                raise MediaError(f"{label}: {image.width}x{image.height} pixels, over the {MAX_PIXELS:,}-pixel "
                                 "limit", 413)
            if budget is not None:
                budget.take(image.width, image.height, label)
            image.load()
            return image.convert("RGB")
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(f"{label}: image too large to decode ({exc})", 413) from None
    except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(f"{label}: not a readable image ({type(exc).__name__}: {exc})", 415) from None


B64_CHUNK = 1 << 20  # base64 characters decoded per call (a multiple of 4)


def decode_data_url(url: str) -> bytes:
    """The data of a `data:...;base64,` URL. Decoded a megabyte at a time: one call holds the GIL
    throughout, so the worker's event loop (its other requests' tokens) waits at most one chunk."""
    try:
        start = url.index(",") + 1
        if (len(url) - start) % 4:
            raise ValueError("its length is not a multiple of 4")
        if url.find("=", start, len(url) - 2) != -1:  # a chunk's own check would pass padding at its end
            raise ValueError("padding before the end")
        out = bytearray()
        for at in range(start, len(url), B64_CHUNK):
            out += base64.b64decode(url[at:at + B64_CHUNK], validate=True)
        return bytes(out)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"the data: URL's base64 is invalid: {exc}") from None


class ImageLoader:
    """Loads a request's images under one policy; one per worker (it owns the fetch session)."""

    def __init__(self, policy: MediaPolicy) -> None:
        self.policy = policy
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._inflight: dict[str, asyncio.Future] = {}
        self._session: aiohttp.ClientSession | None = None

    async def load(self, urls: list[str]) -> list[Any]:
        """The images, in order; MediaError (naming which image) when one cannot be used, and then the
        others are not waited for."""
        budget = PixelBudget()
        tasks = [asyncio.ensure_future(self._one(i, url, budget)) for i, url in enumerate(urls)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def _one(self, index: int, url: str, budget: PixelBudget) -> Any:
        label = f"image {index}"
        try:
            check_reference(url, self.policy)
        except MediaError as exc:
            raise MediaError(f"{label}: {exc}", exc.status) from None
        if url[:5].lower() == "data:":
            data = await asyncio.to_thread(decode_data_url, url)
            return await asyncio.to_thread(decode_image, data, label, budget)
        image = await self._cached(url, label)  # decoded once for every request of this URL: counted here
        budget.take(image.width, image.height, label)
        return image

    async def _cached(self, url: str, label: str) -> Any:
        key = media_key([url])
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        pending = self._inflight.get(key)
        if pending is None:  # one fetch for concurrent requests of the same URL
            pending = asyncio.ensure_future(self._fetch_decode(url, label))
            self._inflight[key] = pending
            pending.add_done_callback(lambda fut, key=key: self._done(key, fut))
        return await asyncio.shield(pending)

    def _done(self, key: str, fut: asyncio.Future) -> None:
        self._inflight.pop(key, None)
        if fut.cancelled() or fut.exception() is not None or self.policy.cache_size == 0:
            return
        self._cache[key] = fut.result()
        while len(self._cache) > self.policy.cache_size:
            self._cache.popitem(last=False)

    async def _fetch_decode(self, url: str, label: str) -> Any:
        data = await self._fetch(url, label)
        return await asyncio.to_thread(decode_image, data, label)

    async def _fetch(self, url: str, label: str) -> bytes:
        cap = self.policy.max_file_bytes
        try:
            async with self._client().get(url, allow_redirects=True, max_redirects=5) as resp:
                if resp.status != 200:
                    raise MediaError(f"{label}: fetching it answered HTTP {resp.status}")
                if (resp.content_length or 0) > cap:
                    raise MediaError(f"{label}: {resp.content_length} bytes, over the {cap}-byte limit "
                                     "(DYN_MM_MAX_FILE_SIZE_MB)", 413)
                return await _read_capped(resp, cap, label)
        except TimeoutError:
            raise MediaError(f"{label}: no answer within {self.policy.fetch_timeout_secs:g} s", 408) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise MediaError(f"{label}: cannot be fetched: {exc}") from None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = None if self.policy.allow_internal else PublicOnlyResolver()
            timeout = aiohttp.ClientTimeout(total=self.policy.fetch_timeout_secs)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, limit=32),
                                                  timeout=timeout)
        return self._session

    async def close(self) -> None:
        for pending in list(self._inflight.values()):
            pending.cancel()
        if self._session is not None:
            await self._session.close()


async def _read_capped(resp: aiohttp.ClientResponse, cap: int, label: str) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK):
        body += chunk
        if len(body) > cap:
            raise MediaError(f"{label}: over the {cap}-byte limit (DYN_MM_MAX_FILE_SIZE_MB)", 413)
    return bytes(body)

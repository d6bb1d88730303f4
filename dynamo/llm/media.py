"""Media (images) a chat request refers to, between the frontend and the workers: which references
are allowed (`MediaPolicy`, from NVIDIA Dynamo's `DYN_MM_*` settings), how they travel on the wire
(`multi_modal_data`, Dynamo's shape `{"image_url": [{"Url": url}]}`), and the key that names them
for KV-block hashing. Fetching and decoding them is the worker's (`dynamo.worker.media_loader`).

A reference is a `data:image/...;base64,` URL or an `https://` URL; `http://` URLs and private,
loopback, link-local and other internal addresses only with `DYN_MM_ALLOW_INTERNAL=1` (a URL a
client sends must not make a worker fetch from the cluster's own services). Local files never."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

import xxhash

from dynamo.runtime.config import setting

IMAGE_URL_KEY = "image_url"  # Dynamo's multi_modal_data key for images
URL_KEY = "Url"  # ... and the variant of one item that carries its URL
MB = 1024 * 1024

# Addresses a client's URL may not reach without DYN_MM_ALLOW_INTERNAL: RFC 1918, CGNAT, loopback,
# link-local (the clouds' metadata service), "this network", multicast and reserved ranges, and
# their IPv6 counterparts (unique-local, link-local, IPv4-mapped).
BLOCKED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"))
BLOCKED_HOSTS = frozenset({"localhost", "localhost.localdomain", "metadata", "metadata.google.internal"})


class MediaError(ValueError):
    """A media reference that cannot be used: a client error, with the HTTP status it deserves
    (400 refused or unreadable, 408 fetch timed out, 413 too large, 415 not an image)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MediaPolicy:
    max_data_url_bytes: int = 16 * MB
    max_file_bytes: int = 64 * MB
    allow_internal: bool = False
    fetch_timeout_secs: float = 30.0
    cache_size: int = 8


@dataclass
class MediaSettings:
    """Config mixin (frontend and workers): the media limits, under NVIDIA Dynamo's variable names."""

    mm_max_data_url_mb: float = setting(16.0, "Largest data: URL (image bytes inline) in MB; the frontend "
                                              "refuses bigger ones with a 413")
    mm_max_file_size_mb: float = setting(64.0, "Largest media file a worker fetches, in MB")
    mm_allow_internal: bool = setting(False, "Let workers fetch http:// URLs and private or internal addresses "
                                             "(off: only https:// URLs to public hosts, and data: URLs)")
    mm_fetch_timeout_secs: float = setting(30.0, "Seconds a worker waits for a media URL's answer")
    mm_image_cache_size: int = setting(8, "Fetched images a worker keeps, by URL (0: none)")

    def media_policy(self) -> MediaPolicy:
        for name in ("mm_max_data_url_mb", "mm_max_file_size_mb", "mm_fetch_timeout_secs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        return MediaPolicy(int(self.mm_max_data_url_mb * MB), int(self.mm_max_file_size_mb * MB),
                           self.mm_allow_internal, self.mm_fetch_timeout_secs, max(0, self.mm_image_cache_size))


def check_reference(url: Any, policy: MediaPolicy) -> str:
    """`url` if the policy lets a worker read it (what can be judged without the network), else
    MediaError. Host names are resolved and judged again by the worker before it fetches."""
    if not isinstance(url, str) or not url:
        raise MediaError("an image URL must be a non-empty string")
    scheme = url[:url.find(":")].lower() if ":" in url else ""
    if scheme == "data":
        return _check_data_url(url, policy)
    if scheme not in ("http", "https"):
        raise MediaError(f"image URL scheme {scheme or '(none)'!r} is not allowed: use https:// or a data: URL")
    if scheme == "http" and not policy.allow_internal:
        raise MediaError("http:// image URLs are not allowed (DYN_MM_ALLOW_INTERNAL=1 allows them): use https://")
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError as exc:  # "Invalid IPv6 URL", a netloc that fails NFKC checks
        raise MediaError(f"malformed image URL: {exc}") from None
    if not host:
        raise MediaError("the image URL has no host")
    if not policy.allow_internal:
        if host in BLOCKED_HOSTS or host.endswith(".localhost"):
            raise MediaError(f"image URL host {host!r} is internal (DYN_MM_ALLOW_INTERNAL=1 allows it)")
        if is_ip_literal(host) and is_blocked_ip(host):
            raise MediaError(f"image URL address {host} is private or internal (DYN_MM_ALLOW_INTERNAL=1 allows it)")
    return url


def _check_data_url(url: str, policy: MediaPolicy) -> str:
    if len(url) > policy.max_data_url_bytes:
        raise MediaError(f"the data: URL is {len(url)} bytes, over the {policy.max_data_url_bytes}-byte limit "
                         "(DYN_MM_MAX_DATA_URL_MB, on the frontend and the workers)", 413)
    head = url[5:url.find(",")] if "," in url else None
    if head is None or not head.lower().startswith("image/") or not head.lower().endswith(";base64"):
        raise MediaError("a data: URL must be an image in base64: data:image/<type>;base64,<data>")
    return url


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def is_blocked_ip(address: str) -> bool:
    ip = ipaddress.ip_address(address.strip("[]").split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in BLOCKED_NETWORKS if net.version == ip.version)


def wire_media(image_urls: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """`multi_modal_data` for these images, as NVIDIA Dynamo's frontend sends it."""
    return {IMAGE_URL_KEY: [{URL_KEY: url} for url in image_urls]}


def image_urls_of(multi_modal_data: dict[str, Any] | None) -> list[str]:
    """The image URLs of a request's `multi_modal_data`, in order; MediaError for another modality or shape."""
    if not multi_modal_data:
        return []
    other = sorted(k for k, v in multi_modal_data.items() if k != IMAGE_URL_KEY and v)
    if other:
        raise MediaError(f"only images are read here; got {', '.join(other)}")
    items = multi_modal_data.get(IMAGE_URL_KEY) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get(URL_KEY), str)
                                              for i in items):
        raise MediaError(f"multi_modal_data.{IMAGE_URL_KEY} must be a list of {{{URL_KEY!r}: url}} items")
    return [item[URL_KEY] for item in items]


def media_key(image_urls: Sequence[str]) -> str:
    """Names a request's images, in order (the same references give the same key)."""
    digest = xxhash.xxh3_128()
    for url in image_urls:
        digest.update(url.encode())
        digest.update(b"\0")
    return digest.hexdigest()


# Where a model's config names the token its chat template writes for an image (LLaVA, Gemma 3, Llama 4,
# Mllama: image_token_index; Qwen2/2.5/3-VL: image_token_id), at the top or in its text config.
IMAGE_TOKEN_KEYS = ("image_token_index", "image_token_id")


def image_token_of(config: dict[str, Any]) -> int | None:
    """The image placeholder's token id from a model's config.json, None when it names none."""
    for section in (config, config.get("text_config") or {}):
        for key in IMAGE_TOKEN_KEYS:
            value = section.get(key) if isinstance(section, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None

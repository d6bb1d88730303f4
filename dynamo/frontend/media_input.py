"""Images in a chat request, at the frontend: the model must read them (its workers' cards say so),
each reference must pass the media policy (a 400, or 413 for an oversized data: URL, before anything
is templated), and the wire requests carry them as NVIDIA Dynamo's `multi_modal_data`, with their
`media_salt` (where in the prompt the first one stands, which they are) for KV-aware routing. The
worker fetches and decodes them (`dynamo.worker.media_loader`)."""

from __future__ import annotations

from dynamo.frontend.errors import ApiError, bad_request
from dynamo.frontend.openai import ChatCompletionRequest
from dynamo.frontend.validation import IMAGE_PART, image_part_url
from dynamo.llm.kv_events.hashing import MediaSalt
from dynamo.llm.media import MediaError, MediaPolicy, check_reference, media_key, wire_media


def chat_images(req) -> list[tuple[str, str]]:
    """(URL, where in the request) of each image part of a chat, in order; none for a completion."""
    if not isinstance(req, ChatCompletionRequest):
        return []
    found = []
    for i, message in enumerate(req.messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part, dict) and part.get("type") == IMAGE_PART:
                    where = f"messages[{i}].content[{j}]"
                    found.append((image_part_url(part, where), f"{where}.image_url.url"))
    return found


def request_images(entry, req, policy: MediaPolicy) -> list[str]:
    """The request's image URLs once the model is known to read them and each passes the policy."""
    images = chat_images(req)
    if not images:
        return []
    if "image" not in entry.card.media_input:
        raise bad_request(f"model {entry.name!r} takes text only: its workers read no images (a vision model's "
                          "vLLM workers read them when started with --enable-multimodal)", images[0][1],
                          "unsupported_content")
    for url, where in images:
        try:
            check_reference(url, policy)
        except MediaError as exc:
            raise ApiError(exc.status, str(exc), "invalid_request_error", where, "invalid_image_url") from None
    return [url for url, _ in images]


def attach_images(pipeline, preqs: list, ids: list[int], urls: list[str]) -> None:
    """Put the images on each wire request, salted for routing from the first image's placeholder on."""
    salt = MediaSalt(media_start(pipeline, ids), media_key(urls))
    media = wire_media(urls)
    for preq in preqs:
        preq.multi_modal_data = media
        preq.media_salt = salt


def media_start(pipeline, ids: list[int]) -> int:
    """Token position of the prompt's first image placeholder (0 when the model names no placeholder
    token: every block then hashes with the images); a 400 when the template placed none."""
    token = pipeline.image_token_id
    if token is None:
        return 0
    try:
        return ids.index(token)
    except ValueError:
        raise bad_request(f"model {pipeline.name!r}'s chat template placed none of the request's images in its "
                          "prompt", "messages", "unsupported_content") from None

"""Media references between the frontend and the workers (dynamo.llm.media): which URLs the policy
lets through, Dynamo's wire shape, the key that names a request's images, the placeholder token a
model's config names, and the DYN_MM_* settings."""

from __future__ import annotations

import base64

import pytest

from dynamo.llm.media import (MB, MediaError, MediaPolicy, MediaSettings, check_reference, image_token_of,
                              image_urls_of, is_blocked_ip, media_key, wire_media)
from dynamo.runtime.config import parse_config

PNG_1PX = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/"
           "iZk9HQAAAABJRU5ErkJggg==")
STRICT, OPEN = MediaPolicy(), MediaPolicy(allow_internal=True)


@pytest.mark.parametrize("url", [PNG_1PX, "https://example.com/cat.png", "https://93.184.216.34/a.jpg",
                                 "HTTPS://Example.com/x", "data:image/jpeg;base64,AAAA"])
def test_references_the_strict_policy_allows(url):
    assert check_reference(url, STRICT) == url


@pytest.mark.parametrize("url, says", [
    ("", "non-empty"), (None, "non-empty"), ("file:///etc/passwd", "'file'"), ("ftp://example.com/a.png", "'ftp'"),
    ("/tmp/cat.png", "(none)"), ("http://example.com/a.png", "http://"), ("https://localhost/a.png", "internal"),
    ("https://127.0.0.1/a.png", "private"), ("https://10.2.3.4/a.png", "private"), ("https://169.254.169.254/", "private"),
    ("https://[::1]/a.png", "private"), ("https://[fd00::1]/a.png", "private"), ("https://192.168.1.9/", "private"),
    ("https://metadata.google.internal/x", "internal"), ("https://svc.localhost/x", "internal"),
    ("https:///nohost", "no host"), ("data:text/plain;base64,QQ==", "image in base64"),
    ("data:image/png,rawbytes", "image in base64"), ("data:image/png;base64", "image in base64"),
    ("https://[::1/a.png", "malformed"), ("https://[zz]/a.png", "malformed"),
])
def test_references_the_strict_policy_refuses(url, says):
    with pytest.raises(MediaError, match=says) as info:
        check_reference(url, STRICT)
    assert info.value.status == 400


@pytest.mark.parametrize("url", ["http://example.com/a.png", "https://127.0.0.1:8080/a.png", "http://localhost/x",
                                 "https://[::1]/a.png"])
def test_allow_internal_lets_http_and_private_addresses_through(url):
    assert check_reference(url, OPEN) == url


def test_a_data_url_over_the_limit_is_413():
    small = MediaPolicy(max_data_url_bytes=64)
    with pytest.raises(MediaError, match="DYN_MM_MAX_DATA_URL_MB") as info:
        check_reference("data:image/png;base64," + "A" * 100, small)
    assert info.value.status == 413


def test_ipv4_mapped_ipv6_is_judged_as_ipv4():
    assert is_blocked_ip("::ffff:127.0.0.1") and is_blocked_ip("::ffff:10.0.0.1")
    assert not is_blocked_ip("::ffff:93.184.216.34") and not is_blocked_ip("2606:4700::1")


def test_wire_shape_is_dynamos_and_reads_back():
    wire = wire_media(["https://a/1.png", PNG_1PX])
    assert wire == {"image_url": [{"Url": "https://a/1.png"}, {"Url": PNG_1PX}]}
    assert image_urls_of(wire) == ["https://a/1.png", PNG_1PX]
    assert image_urls_of(None) == [] and image_urls_of({}) == []


@pytest.mark.parametrize("data, says", [({"video_url": [{"Url": "x"}]}, "only images"),
                                        ({"image_url": "x"}, "list of"), ({"image_url": [{"url": "x"}]}, "list of")])
def test_other_media_or_shapes_are_refused(data, says):
    with pytest.raises(MediaError, match=says):
        image_urls_of(data)


def test_media_key_names_the_images_in_order():
    a, b = "https://h/a.png", "https://h/b.png"
    assert media_key([a, b]) == media_key([a, b])
    assert len({media_key([a, b]), media_key([b, a]), media_key([a]), media_key([a + b])}) == 4


@pytest.mark.parametrize("config, token", [
    ({"image_token_index": 32000}, 32000), ({"image_token_id": 151655}, 151655),
    ({"text_config": {"image_token_id": 7}}, 7), ({"image_token_index": True}, None), ({}, None),
])
def test_image_token_from_config(config, token):
    assert image_token_of(config) == token


def test_settings_read_dynamos_variables():
    cfg = parse_config(MediaSettings, [], environ={"DYN_MM_MAX_DATA_URL_MB": "2", "DYN_MM_ALLOW_INTERNAL": "1",
                                                "DYN_MM_MAX_FILE_SIZE_MB": "3", "DYN_MM_IMAGE_CACHE_SIZE": "0"})
    policy = cfg.media_policy()
    assert (policy.max_data_url_bytes, policy.max_file_bytes, policy.allow_internal, policy.cache_size) == \
        (2 * MB, 3 * MB, True, 0)
    assert parse_config(MediaSettings, [], environ={}).media_policy() == MediaPolicy()
    with pytest.raises(ValueError, match="mm-fetch-timeout-secs"):
        parse_config(MediaSettings, ["--mm-fetch-timeout-secs", "0"], environ={}).media_policy()


def test_png_fixture_is_a_real_png():
    assert base64.b64decode(PNG_1PX.split(",", 1)[1]).startswith(b"\x89PNG")

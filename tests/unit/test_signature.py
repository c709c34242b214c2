"""Tests for pyrowire.signature, cross-checked against Twilio's own RequestValidator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from pyrowire.signature import compute, is_valid, url_variants

TOKEN = "12345abcdef67890auth0token0xyz00"

POST_PARAMS: dict[str, list[str]] = {
    "MessageSid": ["SM0123456789abcdef0123456789abcdef"],
    "From": ["+15551234567"],
    "To": ["+15005550006"],
    "Body": ["Héllo & <world> 😀"],
    "NumMedia": ["0"],
}


class MultiValued(dict[str, list[str]]):
    """A dict of value lists read through ``getall``, as Twilio's validator reads Flask's MultiDict."""

    def getall(self, name: str) -> list[str]:
        """Every value of ``name``."""
        return self[name]


POST_PARAMS_SINGLE = {name: values[0] for name, values in POST_PARAMS.items()}


def official(url: str, params: Mapping[str, Sequence[str]]) -> str:
    """Twilio's signature for the request, computed by the twilio package."""
    signature: str = RequestValidator(TOKEN).compute_signature(
        url, MultiValued({name: list(values) for name, values in params.items()})
    )
    return signature


@pytest.mark.parametrize(
    "url",
    [
        "https://sms.example.com/queue/echo",
        "https://sms.example.com:443/queue/echo",
        "http://localhost:62023/queue/echo",
        "https://sms.example.com/queue/echo?Foo=bar&baz=1",
    ],
)
def test_post_signature_matches_twilio(url: str) -> None:
    """compute() gives exactly the twilio package's signature for form parameters."""
    assert compute(url, POST_PARAMS, TOKEN) == official(url, POST_PARAMS)


def test_repeated_params_match_twilio() -> None:
    """Repeated names use every distinct value, sorted, as Twilio does."""
    params = {**POST_PARAMS, "Tag": ["b", "a", "c", "a"], "Empty": [""]}
    url = "https://sms.example.com/queue/echo"
    assert compute(url, params, TOKEN) == official(url, params)


def test_plain_string_values_are_single_values() -> None:
    """A mapping of names to plain strings is read as one value each."""
    url = "https://x/queue/t"
    assert compute(url, {"Body": "hello"}, TOKEN) == compute(url, {"Body": ["hello"]}, TOKEN)


@pytest.mark.parametrize(
    ("signed_url", "called_url"),
    [
        ("https://sms.example.com/queue/echo", "https://sms.example.com/queue/echo"),
        ("https://sms.example.com:443/queue/echo", "https://sms.example.com/queue/echo"),
        ("https://sms.example.com/queue/echo", "https://sms.example.com:443/queue/echo"),
        ("http://sms.example.com:80/queue/echo", "http://sms.example.com/queue/echo"),
        ("http://sms.example.com/queue/echo", "http://sms.example.com:80/queue/echo"),
        ("http://localhost:62023/queue/echo", "http://localhost:62023/queue/echo"),
    ],
)
def test_post_validation_agrees_with_twilio(signed_url: str, called_url: str) -> None:
    """is_valid accepts what Twilio's validator accepts, with or without the default port."""
    signature = official(signed_url, POST_PARAMS)
    assert RequestValidator(TOKEN).validate(called_url, POST_PARAMS_SINGLE, signature)
    assert is_valid(called_url, POST_PARAMS, signature, TOKEN)


@pytest.mark.parametrize(
    "url",
    [
        "https://sms.example.com/queue/echo?MessageSid=SM1&From=%2B15551234567&Body=hi+there",
        "https://sms.example.com:443/queue/echo?MessageSid=SM1&Body=",
        "http://127.0.0.1:8080/queue/echo?MessageSid=SM1&Body=caf%C3%A9",
    ],
)
def test_get_signature_covers_the_query_string(url: str) -> None:
    """For GET the signed text is the whole URL with its query string and no parameters."""
    signature = official(url, {})
    assert compute(url, {}, TOKEN) == signature
    assert RequestValidator(TOKEN).validate(url, {}, signature)
    assert is_valid(url, {}, signature, TOKEN)


def test_get_with_changed_query_fails() -> None:
    """A GET whose query string was altered does not validate."""
    signature = official("https://x.example/queue/echo?Body=hi", {})
    assert not is_valid("https://x.example/queue/echo?Body=bye", {}, signature, TOKEN)


def test_wrong_signature_fails() -> None:
    """A signature for other parameters, or garbage, is refused."""
    url = "https://sms.example.com/queue/echo"
    signature = official(url, POST_PARAMS)
    assert not is_valid(url, {**POST_PARAMS, "Body": ["changed"]}, signature, TOKEN)
    assert not is_valid(url, POST_PARAMS, signature[:-2] + "AA", TOKEN)
    assert not is_valid(url, POST_PARAMS, "not base64 at all ✗", TOKEN)


def test_wrong_token_fails() -> None:
    """A signature made with another auth token is refused."""
    url = "https://sms.example.com/queue/echo"
    assert not is_valid(url, POST_PARAMS, official(url, POST_PARAMS), "another-token")


def test_wrong_url_fails() -> None:
    """A signature for another path or host is refused."""
    signature = official("https://sms.example.com/queue/echo", POST_PARAMS)
    assert not is_valid("https://sms.example.com/queue/other", POST_PARAMS, signature, TOKEN)
    assert not is_valid("https://evil.example.com/queue/echo", POST_PARAMS, signature, TOKEN)


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature_fails(signature: str | None) -> None:
    """No signature at all is never valid."""
    assert not is_valid("https://x/queue/t", POST_PARAMS, signature, TOKEN)


def test_non_default_port_is_not_dropped() -> None:
    """A signature for the URL without its non-default port does not validate on that port."""
    signature = official("https://sms.example.com/queue/echo", POST_PARAMS)
    assert not is_valid("https://sms.example.com:8443/queue/echo", POST_PARAMS, signature, TOKEN)


@pytest.mark.parametrize(
    ("url", "variants"),
    [
        ("https://h/p?q=1", ("https://h/p?q=1", "https://h:443/p?q=1")),
        ("https://h:443/p", ("https://h:443/p", "https://h/p")),
        ("http://h/p", ("http://h/p", "http://h:80/p")),
        ("http://h:80", ("http://h:80", "http://h")),
        ("HTTPS://H/p", ("HTTPS://H/p", "HTTPS://H:443/p")),
        ("https://u:pw@h/p", ("https://u:pw@h/p", "https://u:pw@h:443/p")),
        ("https://[::1]:443/p", ("https://[::1]:443/p", "https://[::1]/p")),
        ("https://h:8443/p", ("https://h:8443/p",)),
        ("http://h:443/p", ("http://h:443/p",)),
        ("ftp://h/p", ("ftp://h/p",)),
        ("https://h:notaport/p", ("https://h:notaport/p",)),
        ("/queue/echo", ("/queue/echo",)),
    ],
)
def test_url_variants(url: str, variants: tuple[str, ...]) -> None:
    """The URL as given comes first, then with the scheme's default port added or removed."""
    assert url_variants(url) == variants

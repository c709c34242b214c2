"""Tests for pyrowire.message: Twilio parameters to the message dict."""

from __future__ import annotations

import json

import pytest

from pyrowire.errors import BadRequest
from pyrowire.message import first, parse_message

SMS = {
    "MessageSid": ["SM123"],
    "From": ["+15551234567"],
    "To": ["+15005550006"],
    "Body": ["Some message"],
    "NumMedia": ["0"],
    "FromCity": ["PORTLAND"],
    "FromState": ["OR"],
    "FromCountry": ["US"],
    "FromZip": ["97209"],
}


def test_sms_gives_exactly_the_spec_dict() -> None:
    """A full SMS webhook turns into the SPEC section 5 dict, key for key."""
    assert parse_message("echo", SMS) == {
        "message": "Some message",
        "number": "+15551234567",
        "sid": "SM123",
        "topic": "echo",
        "to": "+15005550006",
        "from_city": "PORTLAND",
        "from_state": "OR",
        "from_country": "US",
        "from_zip": "97209",
        "media": {"count": 0, "media": {}},
        "reply": None,
    }


def test_result_is_json_serialisable() -> None:
    """The message dict survives a JSON round trip unchanged."""
    message = parse_message("echo", SMS)
    assert json.loads(json.dumps(message)) == message


def test_missing_optional_fields_are_none() -> None:
    """Location fields and To are None when Twilio sent none or sent them empty."""
    params = {"MessageSid": ["SM1"], "From": ["+1"], "Body": ["hi"], "FromZip": [""], "FromCity": []}
    message = parse_message("t", params)
    for key in ("to", "from_city", "from_state", "from_country", "from_zip"):
        assert message[key] is None
    assert message["media"] == {"count": 0, "media": {}}


def test_empty_body_is_accepted() -> None:
    """An empty Body is present, not missing: the length validator is the one to refuse it."""
    message = parse_message("t", {"MessageSid": ["SM1"], "From": ["+1"], "Body": [""]})
    assert message["message"] == ""


@pytest.mark.parametrize("field", ["MessageSid", "From", "Body"])
def test_missing_required_field_is_400_naming_it(field: str) -> None:
    """Leaving out MessageSid, From or Body is a 400 whose sentence names the field."""
    params = {k: v for k, v in SMS.items() if k != field}
    with pytest.raises(BadRequest) as caught:
        parse_message("echo", params)
    assert caught.value.status == 400
    assert field in caught.value.sentence
    assert caught.value.sentence.endswith(".")


@pytest.mark.parametrize("field", ["MessageSid", "From"])
def test_empty_sid_or_sender_is_400(field: str) -> None:
    """An empty MessageSid or From cannot identify a message, so it is refused too."""
    with pytest.raises(BadRequest) as caught:
        parse_message("echo", {**SMS, field: [""]})
    assert caught.value.status == 400
    assert field in caught.value.sentence


def test_mms_media_map_urls_to_content_types() -> None:
    """Each MediaUrlN maps to its MediaContentTypeN, defaulting to application/octet-stream."""
    params = {
        **SMS,
        "Body": [""],
        "NumMedia": ["2"],
        "MediaUrl0": ["https://api.twilio.com/m/0"],
        "MediaContentType0": ["image/jpeg"],
        "MediaUrl1": ["https://api.twilio.com/m/1"],
    }
    assert parse_message("echo", params)["media"] == {
        "count": 2,
        "media": {
            "https://api.twilio.com/m/0": "image/jpeg",
            "https://api.twilio.com/m/1": "application/octet-stream",
        },
    }


def test_ten_media_are_accepted() -> None:
    """Ten media, Twilio's maximum, are all read."""
    params: dict[str, list[str]] = {**SMS, "NumMedia": ["10"]}
    for i in range(10):
        params[f"MediaUrl{i}"] = [f"https://m/{i}"]
        params[f"MediaContentType{i}"] = ["image/png"]
    media = parse_message("echo", params)["media"]
    assert media["count"] == 10
    assert len(media["media"]) == 10


@pytest.mark.parametrize("raw", ["-1", "x", "", "1.5", "11", "99999999999999999999", "²", " 1"])
def test_bad_num_media_is_400(raw: str) -> None:
    """A NumMedia that is not a whole number from 0 to 10 is a 400 naming NumMedia."""
    with pytest.raises(BadRequest) as caught:
        parse_message("echo", {**SMS, "NumMedia": [raw]})
    assert caught.value.status == 400
    assert "NumMedia" in caught.value.sentence


def test_num_media_with_leading_zeros_is_read() -> None:
    """NumMedia "01" means one medium."""
    params = {**SMS, "NumMedia": ["01"], "MediaUrl0": ["https://m/0"]}
    assert parse_message("echo", params)["media"]["count"] == 1


def test_missing_media_url_is_400_naming_it() -> None:
    """NumMedia promising more media than MediaUrlN parameters present is a 400 naming the field."""
    params = {**SMS, "NumMedia": ["2"], "MediaUrl0": ["https://m/0"]}
    with pytest.raises(BadRequest) as caught:
        parse_message("echo", params)
    assert caught.value.status == 400
    assert "MediaUrl1" in caught.value.sentence


def test_repeated_parameter_uses_the_first_value() -> None:
    """A parameter sent twice contributes its first value."""
    assert parse_message("echo", {**SMS, "Body": ["one", "two"]})["message"] == "one"


def test_first_accepts_lists_and_plain_strings() -> None:
    """first() reads a list of values, a plain string value, and None for absent or empty lists."""
    assert first({"a": ["x", "y"]}, "a") == "x"
    assert first({"a": "xyz"}, "a") == "xyz"
    assert first({"a": ""}, "a") == ""
    assert first({"a": []}, "a") is None
    assert first({}, "a") is None

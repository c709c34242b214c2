"""load_settings: the original TOPICS/PROFILES shape, defaults, and errors naming the key."""

from __future__ import annotations

import logging
import types
from typing import Any

import pytest

from pyrowire.errors import ConfigurationError
from pyrowire.settings import DEFAULT_API_BASE, Settings, load_settings

ACCOUNT = "AC" + "2" * 32
TOKEN = "settings-secret-token"


def original_topics() -> dict[str, Any]:
    """TOPICS exactly as the 2014 pyrowire's README wrote them."""
    return {
        "echo": {
            "send_on_accept": False,
            "accept_response": "Great, we'll get right back to you.",
            "error_response": "It seems like an error has occurred...please try again later.",
            "validators": {
                "profanity": "No profanity, please.",
                "length": "Your message was empty or too long.",
                "parseable": "Please only use alphanumeric and punctuation characters.",
            },
            "properties": {"greeting": "hi"},
            "twilio": {"account_sid": ACCOUNT, "auth_token": TOKEN, "from_number": "+15005550006"},
            "max_message_length": 160,
        },
    }


def original_profiles() -> dict[str, Any]:
    return {
        "dev": {
            "debug": True,
            "log_level": logging.DEBUG,
            "redis": {"host": "localhost", "port": 6379, "db": 0, "password": ""},
            "host": "localhost",
            "port": 62023,
        },
        "prod": {
            "debug": False,
            "log_level": logging.ERROR,
            "redis": {"host": "redis.example", "port": 6379, "db": 1, "password": "hunter2"},
            "host": "0.0.0.0",
            "port": 0,
        },
    }


def load(topic: dict[str, Any] | None = None, profile: dict[str, Any] | None = None) -> Settings:
    """Settings with the echo topic and prod profile updated by ``topic`` / ``profile``."""
    topics = original_topics()
    topics["echo"].update(topic or {})
    profiles = original_profiles()
    profiles["prod"].update(profile or {})
    return load_settings({"TOPICS": topics, "PROFILES": profiles})


def error(topic: dict[str, Any] | None = None, profile: dict[str, Any] | None = None) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        load(topic, profile)
    return info.value


def test_original_shape_loads_from_a_dict() -> None:
    """The 2014 TOPICS/PROFILES dict loads unchanged into frozen values."""
    s = load()
    echo = s.topics["echo"]
    assert echo.accept_response == "Great, we'll get right back to you."
    assert list(echo.validators) == ["profanity", "length", "parseable"]
    assert echo.validators["length"] == "Your message was empty or too long."
    assert echo.properties == {"greeting": "hi"}
    assert echo.max_message_length == 160
    assert echo.twilio.account_sid == ACCOUNT and echo.twilio.from_number == "+15005550006"
    assert echo.twilio.api_base == DEFAULT_API_BASE
    prod = s.profiles["prod"]
    assert (prod.host, prod.port, prod.log_level, prod.debug) == ("0.0.0.0", 0, logging.ERROR, False)
    assert (prod.redis.host, prod.redis.db, prod.redis.password) == ("redis.example", 1, "hunter2")
    assert s.profiles["dev"].redis.password is None


def test_original_shape_loads_from_a_module() -> None:
    """A settings module with TOPICS and PROFILES attributes loads like the dict."""
    module = types.ModuleType("settings")
    module.TOPICS = original_topics()  # type: ignore[attr-defined]
    module.PROFILES = original_profiles()  # type: ignore[attr-defined]
    assert load_settings(module) == load()


def test_settings_are_frozen() -> None:
    """Loaded settings cannot be changed afterwards."""
    s = load()
    with pytest.raises(TypeError):
        s.topics["echo"].validators["x"] = "y"  # type: ignore[index]
    with pytest.raises(AttributeError):
        s.topics["echo"].accept_response = "changed"  # type: ignore[misc]


def test_secrets_are_not_in_reprs() -> None:
    """Neither the auth token nor the Redis password appears in a repr of the settings."""
    text = repr(load())
    assert TOKEN not in text
    assert "hunter2" not in text


@pytest.mark.parametrize("length", [0, 1601])
def test_max_message_length_out_of_range_names_the_key(length: int) -> None:
    """max_message_length outside 1..1600 is refused, naming the key."""
    e = error({"max_message_length": length})
    assert e.option == "TOPICS['echo'].max_message_length"


def test_max_message_length_1600_is_allowed() -> None:
    """max_message_length may be exactly 1600."""
    assert load({"max_message_length": 1600}).topics["echo"].max_message_length == 1600


def test_non_dict_topic_names_the_topic() -> None:
    """A topic that is not a dict is refused naming TOPICS[name]."""
    with pytest.raises(ConfigurationError) as info:
        load_settings({"TOPICS": {"echo": ["not", "a", "dict"]}, "PROFILES": original_profiles()})
    assert info.value.option == "TOPICS['echo']"


@pytest.mark.parametrize("base", ["api.twilio.com", "ftp://api.twilio.com", ""])
def test_bad_api_base_names_the_key(base: str) -> None:
    """twilio.api_base that is not an http(s) URL is refused naming the key."""
    twilio = {**original_topics()["echo"]["twilio"], "api_base": base}
    assert error({"twilio": twilio}).option == "TOPICS['echo'].twilio.api_base"


def test_api_base_trailing_slash_is_dropped() -> None:
    """A trailing slash on api_base is removed."""
    twilio = {**original_topics()["echo"]["twilio"], "api_base": "http://127.0.0.1:9999/"}
    assert load({"twilio": twilio}).topics["echo"].twilio.api_base == "http://127.0.0.1:9999"


@pytest.mark.parametrize("url", ["sms.example.com", "ftp://sms.example.com"])
def test_bad_public_url_names_the_key(url: str) -> None:
    """A public_url that is not http(s) is refused naming PROFILES[name].public_url."""
    assert error(profile={"public_url": url}).option == "PROFILES['prod'].public_url"


def test_public_url_trailing_slash_is_dropped() -> None:
    """public_url is an origin; a trailing slash is removed so the path can be appended."""
    assert load(profile={"public_url": "https://sms.example.com/"}).profiles["prod"].public_url == (
        "https://sms.example.com"
    )


@pytest.mark.parametrize(
    ("topic", "profile", "key"),
    [
        ({"accept_response": 5}, None, "TOPICS['echo'].accept_response"),
        ({"send_on_accept": "yes"}, None, "TOPICS['echo'].send_on_accept"),
        ({"max_message_length": "160"}, None, "TOPICS['echo'].max_message_length"),
        ({"max_message_length": True}, None, "TOPICS['echo'].max_message_length"),
        ({"validators": "length"}, None, "TOPICS['echo'].validators"),
        ({"validators": {"length": 3}}, None, "TOPICS['echo'].validators"),
        ({"properties": []}, None, "TOPICS['echo'].properties"),
        ({"max_attempts": 0}, None, "TOPICS['echo'].max_attempts"),
        ({"retention": 0}, None, "TOPICS['echo'].retention"),
        ({"twilio": "AC123"}, None, "TOPICS['echo'].twilio"),
        ({"twilio": {"account_sid": 5}}, None, "TOPICS['echo'].twilio.account_sid"),
        (None, {"port": "80"}, "PROFILES['prod'].port"),
        (None, {"port": 70000}, "PROFILES['prod'].port"),
        (None, {"debug": "no"}, "PROFILES['prod'].debug"),
        (None, {"redis": 6379}, "PROFILES['prod'].redis"),
        (None, {"redis": {"port": "6379"}}, "PROFILES['prod'].redis.port"),
        (None, {"log_format": "xml"}, "PROFILES['prod'].log_format"),
    ],
)
def test_wrong_types_name_the_key(
    topic: dict[str, Any] | None, profile: dict[str, Any] | None, key: str
) -> None:
    """A setting of the wrong type or value is refused with the key's full path."""
    e = error(topic, profile)
    assert e.option == key
    assert key in str(e)


def test_missing_or_empty_topics_is_refused() -> None:
    """TOPICS missing, empty or not a dict is refused naming TOPICS."""
    for source in ({}, {"TOPICS": {}}, {"TOPICS": ["echo"]}):
        with pytest.raises(ConfigurationError) as info:
            load_settings(source)
        assert info.value.option == "TOPICS"


@pytest.mark.parametrize("name", ["a/b", "{x}", ""])
def test_unusable_topic_names_are_refused(name: str) -> None:
    """A topic name that cannot be a URL segment or a Redis hash tag is refused."""
    with pytest.raises(ConfigurationError) as info:
        load_settings({"TOPICS": {name: {}}})
    assert info.value.option == "TOPICS"


def test_bad_profiles_is_refused() -> None:
    """PROFILES that is empty or not a dict is refused naming PROFILES; a non-dict profile names it."""
    with pytest.raises(ConfigurationError) as info:
        load_settings({"TOPICS": original_topics(), "PROFILES": {}})
    assert info.value.option == "PROFILES"
    with pytest.raises(ConfigurationError) as info:
        load_settings({"TOPICS": original_topics(), "PROFILES": {"dev": 1}})
    assert info.value.option == "PROFILES['dev']"


def test_profiles_default_to_a_dev_profile() -> None:
    """Settings without PROFILES get a dev profile."""
    s = load_settings({"TOPICS": {"echo": {}}})
    assert list(s.profiles) == ["dev"]


def test_sandbox_is_implied_without_credentials() -> None:
    """A topic with no Twilio credentials is in sandbox; one with credentials is not unless asked."""
    s = load_settings(
        {
            "TOPICS": {
                "bare": {},
                "half": {"twilio": {"account_sid": ACCOUNT}},
                "full": original_topics()["echo"],
                "forced": {
                    **original_topics()["echo"],
                    "twilio": {**original_topics()["echo"]["twilio"], "sandbox": True},
                },
            }
        }
    )
    assert s.topics["bare"].twilio.sandbox is True
    assert s.topics["half"].twilio.sandbox is True
    assert s.topics["full"].twilio.sandbox is False
    assert s.topics["forced"].twilio.sandbox is True


def test_sandbox_false_without_credentials_is_refused() -> None:
    """``sandbox: False`` without account_sid and auth_token is refused naming the twilio key."""
    assert error({"twilio": {"sandbox": False}}).option == "TOPICS['echo'].twilio"


def test_credentials_without_a_sender_are_refused() -> None:
    """Credentials without from_number or messaging_service_sid are refused naming the twilio key."""
    assert error({"twilio": {"account_sid": ACCOUNT, "auth_token": TOKEN}}).option == "TOPICS['echo'].twilio"
    ok = load({"twilio": {"account_sid": ACCOUNT, "auth_token": TOKEN, "messaging_service_sid": "MG1"}})
    assert ok.topics["echo"].twilio.messaging_service_sid == "MG1"


def test_validate_signature_defaults_to_true_with_an_auth_token() -> None:
    """validate_signature is on when an auth token is set, off without one, and can be turned off."""
    assert load().topics["echo"].validate_signature is True
    assert load_settings({"TOPICS": {"bare": {}}}).topics["bare"].validate_signature is False
    assert load({"validate_signature": False}).topics["echo"].validate_signature is False


def test_optional_topic_keys_have_defaults() -> None:
    """max_attempts defaults to 1, retention to 10,000, status_callback to None."""
    echo = load().topics["echo"]
    assert (echo.max_attempts, echo.retention, echo.status_callback) == (1, 10_000, None)


def test_validators_may_be_a_list_of_names() -> None:
    """A list of validator names is accepted, each with an empty failure message."""
    assert dict(load({"validators": ["length"]}).topics["echo"].validators) == {"length": ""}


def test_profile_lookup_is_case_insensitive() -> None:
    """settings.profile finds a profile whatever the case of the name."""
    s = load()
    assert s.profile("PROD").name == "prod"
    assert s.profile("Dev").name == "dev"


def test_unknown_profile_names_the_option() -> None:
    """An unknown profile is refused naming --profile and listing the known ones."""
    with pytest.raises(ConfigurationError) as info:
        load().profile("staging")
    assert info.value.option == "--profile"
    assert "dev" in info.value.why and "prod" in info.value.why


def test_redis_url_in_a_profile() -> None:
    """A profile's redis may carry a url (or be a URL string), which is never in a repr."""
    s = load(profile={"redis": {"url": "redis://:pw-in-url@r:1/2"}})
    assert s.profiles["prod"].redis.url == "redis://:pw-in-url@r:1/2"
    assert "pw-in-url" not in repr(s)
    assert load(profile={"redis": "redis://r:1/0"}).profiles["prod"].redis.url == "redis://r:1/0"


@pytest.mark.parametrize(
    ("topic", "profile", "expected"),
    [
        ({"accept_respons": ""}, None, "TOPICS['echo'].accept_respons: unknown key (did you mean accept_response?)"),
        ({"twilio": {"from_numbr": "+1"}}, None,
         "TOPICS['echo'].twilio.from_numbr: unknown key (did you mean from_number?)"),
        (None, {"hots": "0.0.0.0"}, "PROFILES['prod'].hots: unknown key (did you mean host?)"),
        (None, {"redis": {"pasword": "x"}}, "PROFILES['prod'].redis.pasword: unknown key (did you mean password?)"),
    ],
)
def test_unknown_keys_are_refused_naming_the_nearest(topic: dict[str, Any] | None, profile: dict[str, Any] | None,
                                                      expected: str) -> None:
    """A misspelled key in a topic, its twilio, a profile or its redis is refused, naming it and the nearest key."""
    assert str(error(topic, profile)) == expected


def test_unknown_key_without_a_near_one_lists_the_known_keys() -> None:
    """A key like no known one is refused with the list of the keys that exist."""
    why = error({"colour": "blue"}).why
    assert why.startswith("unknown key (known keys: accept_response, ")
    assert "max_message_length" in why


def test_every_key_the_spec_names_is_accepted() -> None:
    """The optional keys of SPEC section 4, including those not used yet, load without complaint."""
    later = {"ordered": False, "session_ttl": 3600, "opt_out": True, "help_response": "Text STOP to stop.",
             "status_callback": "https://example.com/status", "max_attempts": 3, "retention": 50,
             "validate_signature": True}
    twilio = {"account_sid": ACCOUNT, "auth_token": TOKEN, "messaging_service_sid": "MG" + "1" * 32,
              "sandbox": False, "api_base": "http://127.0.0.1:9", "mps": 1}
    profile = {"public_url": "https://sms.example.com", "console_password": "pw", "key_prefix": "joke",
               "log_format": "json", "redis": {"url": "redis://r:1/0", "host": "r", "port": 1, "db": 0,
                                               "password": ""}}
    s = load({**later, "twilio": twilio}, profile)
    assert s.topics["echo"].twilio.messaging_service_sid == "MG" + "1" * 32


def test_the_2014_voice_call_keys_are_accepted() -> None:
    """call_timeout and the call_*_response keys of the 2014 settings template still load."""
    load({"call_timeout": 10, "call_busy_response": "Busy.", "call_error_response": "Oops."})


@pytest.mark.parametrize(("topic", "key"), [({"ordered": "no"}, "ordered"), ({"session_ttl": 0}, "session_ttl"),
                                            ({"twilio": {"mps": 0}}, "twilio.mps")])
def test_keys_accepted_for_later_are_still_type_checked(topic: dict[str, Any], key: str) -> None:
    """A key accepted before it is used is still refused with a wrong value, naming it."""
    assert error(topic).option == f"TOPICS['echo'].{key}"

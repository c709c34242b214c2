"""pyrowire.testing: AppTester feeds messages through the real webhook and handles them as a worker does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, globalLogPublisher

import pyrowire
from pyrowire.errors import ConfigurationError
from pyrowire.testing import AppTester, Fed, WebhookRefused, make_message
from tests.deferreds import result_of

ACCEPT = "Great, we'll get right back to you."
TOKEN = "testing-auth-token"
ACCOUNT = "AC" + "2" * 32

SETTINGS = {
    "TOPICS": {
        "echo": {
            "accept_response": ACCEPT,
            "validators": {"length": "Empty or too long.", "profanity": "No profanity, please."},
            "max_message_length": 20,
            "twilio": {"from_number": "+15005550006"},
        },
        "yo": {"accept_response": "", "validators": {"must_say_yo": "Say yo."}},
        "signed": {
            "accept_response": "ok",
            "twilio": {"account_sid": ACCOUNT, "auth_token": TOKEN, "from_number": "+15005550007"},
        },
        "welcome": {"accept_response": "Welcome!", "send_on_accept": True,
                    "twilio": {"from_number": "+15005550008"}},
    },
    "PROFILES": {"dev": {"debug": True}, "prod": {"key_prefix": "live"}},
}


@pytest.fixture
def app() -> pyrowire.App:
    app = pyrowire.App(SETTINGS)

    @app.handler(topic="echo")
    def echo(message: dict[str, Any]) -> Any:
        message["reply"] = message["message"][::-1]
        app.sms(message)  # not awaited: the sandbox send is captured at once
        return message

    @app.handler(topic="yo")
    def yo(message: dict[str, Any]) -> str:
        return "yo back"

    @app.validator(name="must_say_yo")
    def must_say_yo(message: dict[str, Any]) -> bool:
        return "yo" not in message["message"].lower()

    @app.handler(topic="signed")
    async def signed(message: dict[str, Any]) -> str:
        message["reply"] = "signed and sealed"
        return await app.sms(message)

    @app.handler(topic="welcome")
    def welcome(message: dict[str, Any]) -> None:
        return None

    return app


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tester(app: pyrowire.App, clock: Clock) -> Iterator[AppTester]:
    with AppTester(app, clock=clock) as t:
        yield t




def feed(tester: AppTester, topic: str = "echo", **kwargs: Any) -> Fed:
    """Feed on the test's Clock, where everything finishes without time passing."""
    return cast(Fed, result_of(tester.feed(topic, **kwargs)))


# --- handlers of every shape ----------------------------------------------


def test_plain_handler_result_answer_and_captured_sms(tester: AppTester) -> None:
    """A plain handler's return value is the result, the accept TwiML is the answer, its sms is captured."""
    fed = feed(tester, body="hello", number="+15551230000")
    assert fed.accepted
    assert fed.twiml == f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{ACCEPT}</Message></Response>'
    assert fed.answer == ACCEPT
    assert fed.result is not None and fed.result["reply"] == "olleh"
    assert fed.error is None and fed.failure is None
    [sent] = fed.sent
    assert set(sent) == {"sid", "to", "from", "body", "media_urls", "in_reply_to"}
    assert sent["sid"].startswith("SB")
    assert (sent["to"], sent["from"], sent["body"], sent["media_urls"]) == ("+15551230000", "+15005550006",
                                                                           "olleh", [])
    assert sent["in_reply_to"] == fed.message["sid"]
    assert tester.sent == [sent]


def test_deferred_handler(app: pyrowire.App, tester: AppTester) -> None:
    """A handler returning a Deferred gives the value it fires with as the result."""

    @app.handler(topic="echo")
    def echo(message: dict[str, Any]) -> Deferred[str]:
        message["reply"] = "deferred"
        return app.sms(message).addCallback(lambda sid: f"sent {sid}")

    fed = feed(tester)
    assert fed.result == f"sent {fed.sent[0]['sid']}"
    assert fed.sent[0]["body"] == "deferred"


def test_async_handler(tester: AppTester) -> None:
    """An async handler is awaited and its return value (here the SID of its sms) is the result."""
    fed = feed(tester, topic="signed", body="hi")
    assert fed.result == fed.sent[0]["sid"]
    assert fed.sent[0]["body"] == "signed and sealed"


def test_record_is_the_workers_complete_record(tester: AppTester) -> None:
    """The worker's real complete record is kept in the in-memory store and shown as Fed.record."""
    fed = feed(tester)
    assert fed.record is not None
    assert fed.record["message"]["sid"] == fed.message["sid"]
    assert fed.record["sids"] == [fed.sent[0]["sid"]]
    assert fed.record["attempt"] == 1


@pytest_twisted.ensureDeferred
async def test_handler_using_deferlater_on_the_real_reactor(app: pyrowire.App) -> None:
    """With no clock the tester runs on the global reactor, so a handler may wait with deferLater(reactor)."""

    @app.handler(topic="echo")
    async def slow(message: dict[str, Any]) -> str:
        await deferLater(reactor, 0.01)
        message["reply"] = "later"
        await app.sms(message)
        return "waited"

    async with AppTester(app) as tester:
        fed = await tester.feed("echo", body="hello")
    assert fed.result == "waited"
    assert [m["body"] for m in fed.sent] == ["later"]


def test_handler_using_deferlater_on_a_clock(app: pyrowire.App, clock: Clock, tester: AppTester) -> None:
    """On a task.Clock the feed fires only once the clock is advanced past what the handler waits for."""

    @app.handler(topic="echo")
    async def slow(message: dict[str, Any]) -> str:
        await deferLater(clock, 5)
        message["reply"] = "later"
        await app.sms(message)
        return "waited"

    d = tester.feed("echo", body="hello")
    assert not d.called
    clock.advance(4)
    assert not d.called
    clock.advance(1)
    fed = result_of(d)
    assert fed.result == "waited" and fed.sent[0]["body"] == "later"


def test_raising_handler_sets_error_and_logs_no_error(app: pyrowire.App, tester: AppTester) -> None:
    """A handler's exception is Fed.error (and Fed.failure), recorded by the worker, and not logged as an error."""

    @app.handler(topic="echo")
    def broken(message: dict[str, Any]) -> None:
        raise ZeroDivisionError("boom")

    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        fed = feed(tester)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert fed.accepted
    assert isinstance(fed.error, ZeroDivisionError) and str(fed.error) == "boom"
    assert fed.failure is not None and fed.failure.check(ZeroDivisionError)
    assert fed.result is None and fed.sent == []
    assert fed.record is not None and fed.record["error"] == "ZeroDivisionError: boom"
    assert not [e for e in events if "log_failure" in e]


# --- validators ------------------------------------------------------------


@pytest.mark.parametrize(("body", "answer"), [("oh shit", "No profanity, please."),
                                              ("x" * 21, "Empty or too long."),
                                              ("", "Empty or too long.")])
def test_builtin_validator_refuses(tester: AppTester, body: str, answer: str) -> None:
    """A message a built-in validator refuses is not accepted, answers its message, runs no handler, sends nothing."""
    fed = feed(tester, body=body)
    assert not fed.accepted
    assert fed.answer == answer
    assert fed.result is None and fed.error is None and fed.record is None
    assert fed.sent == [] and tester.sent == []
    assert fed.message["message"] == body


def test_custom_validator(tester: AppTester) -> None:
    """A custom validator refuses through the webhook and lets a valid message through to the handler."""
    refused = feed(tester, topic="yo", body="hello")
    assert (refused.accepted, refused.answer) == (False, "Say yo.")
    accepted = feed(tester, topic="yo", body="yo there")
    assert accepted.accepted and accepted.result == "yo back"
    assert accepted.answer is None
    assert accepted.twiml == '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def test_validate_runs_the_topics_validators(tester: AppTester) -> None:
    """validate() answers (name, failure message) of the first failing validator, or None."""
    assert result_of(tester.validate("echo", body="shit")) == ("profanity", "No profanity, please.")
    assert result_of(tester.validate("echo", body="")) == ("length", "Empty or too long.")
    assert result_of(tester.validate("echo", body="fine")) is None
    assert result_of(tester.validate("yo", body="nope")) == ("must_say_yo", "Say yo.")


def test_async_validator(app: pyrowire.App, clock: Clock, tester: AppTester) -> None:
    """An async validator waiting on the clock holds the feed's answer until the clock moves."""

    @app.validator(name="must_say_yo")
    async def slow_yo(message: dict[str, Any]) -> bool:
        await deferLater(clock, 1)
        return "yo" not in message["message"]

    d = tester.feed("yo", body="no")
    assert not d.called
    clock.advance(1)
    fed = result_of(d)
    assert (fed.accepted, fed.answer) == (False, "Say yo.")


def test_duplicate_sid_is_not_accepted_again(tester: AppTester) -> None:
    """Feeding the same MessageSid twice answers the same but runs the handler once, as for a Twilio retry."""
    first = feed(tester, sid="SM" + "a" * 32)
    again = feed(tester, sid="SM" + "a" * 32)
    assert first.accepted and not again.accepted
    assert again.answer == first.answer
    assert len(tester.sent) == 1 and again.sent == []


# --- sending ---------------------------------------------------------------


def test_mms_media_urls_and_include_text(app: pyrowire.App, tester: AppTester) -> None:
    """app.mms is captured with its media URLs, and with the text only when include_text is set."""

    @app.handler(topic="echo")
    async def pictures(message: dict[str, Any]) -> None:
        message["reply"] = "look"
        await app.mms(message, media_url="https://example.com/a.png")
        await app.mms(message, media_url=["https://example.com/b.gif", "https://example.com/c.jpg"],
                      include_text=True)

    fed = feed(tester)
    assert [(m["body"], m["media_urls"]) for m in fed.sent] == [
        (None, ["https://example.com/a.png"]),
        ("look", ["https://example.com/b.gif", "https://example.com/c.jpg"]),
    ]


def test_send_on_accept_is_captured(tester: AppTester) -> None:
    """With send_on_accept, the accept response sent through the REST API is captured too."""
    fed = feed(tester, topic="welcome")
    assert fed.answer == "Welcome!"
    assert [(m["body"], m["from"]) for m in fed.sent] == [("Welcome!", "+15005550008")]


def test_sent_is_per_feed_and_tester_sent_is_everything(tester: AppTester) -> None:
    """Fed.sent holds only that feed's messages; tester.sent keeps all of them in order."""
    one = feed(tester, body="one")
    two = feed(tester, body="two")
    assert [m["body"] for m in one.sent] == ["eno"]
    assert [m["body"] for m in two.sent] == ["owt"]
    assert [m["body"] for m in tester.sent] == ["eno", "owt"]


def test_topic_with_real_credentials_is_sandboxed_and_signed(app: pyrowire.App, tester: AppTester) -> None:
    """A topic with an auth token gets correctly signed requests and its replies stay in the sandbox."""
    assert app.settings.topics["signed"].validate_signature
    fed = feed(tester, topic="signed")
    assert fed.accepted and fed.answer == "ok"
    assert fed.sent[0]["from"] == "+15005550007" and fed.sent[0]["sid"].startswith("SB")


# --- messages ----------------------------------------------------------------


def test_make_message_shape() -> None:
    """make_message builds SPEC section 5's dict with Twilio-like defaults."""
    message = make_message()
    assert set(message) == {"message", "number", "sid", "topic", "to", "from_city", "from_state", "from_country",
                            "from_zip", "media", "reply"}
    assert re.fullmatch(r"SM[0-9a-f]{32}", message["sid"])
    assert message["sid"] != make_message()["sid"]
    assert message == {**message, "message": "hello", "number": "+15551234567", "topic": "echo",
                       "to": "+15005550006", "from_city": None, "from_state": None, "from_country": None,
                       "from_zip": None, "media": {"count": 0, "media": {}}, "reply": None}


def test_make_message_media_and_overrides() -> None:
    """make_message takes media as a URL, a list or a dict, and overrides any key of the message."""
    assert make_message(media="https://x/a.jpg")["media"] == {"count": 1, "media": {"https://x/a.jpg": "image/jpeg"}}
    assert make_message(media=["https://x/a.png", "https://x/b"])["media"]["media"] == {
        "https://x/a.png": "image/png", "https://x/b": "application/octet-stream"}
    assert make_message(media={"https://x/v": "video/mp4"})["media"]["count"] == 1
    message = make_message("other", "hi", "+1555", from_city="PORTLAND", sid="SM1")
    assert (message["topic"], message["message"], message["number"], message["from_city"], message["sid"]) == (
        "other", "hi", "+1555", "PORTLAND", "SM1")
    with pytest.raises(TypeError, match="from_town"):
        make_message(from_town="x")


def test_feed_hands_the_handler_the_message_twilio_would_give(app: pyrowire.App, tester: AppTester) -> None:
    """Overrides and media go through the webhook as Twilio parameters and reach the handler as SPEC §5 says."""
    seen: list[dict[str, Any]] = []

    @app.handler(topic="echo")
    def look(message: dict[str, Any]) -> None:
        seen.append(dict(message))

    fed = feed(tester, body="pic", number="+15550001111", media=["https://x/a.jpg"], sid="SM" + "b" * 32,
               from_city="PORTLAND", FromCountry="US")
    assert seen == [fed.message]
    assert fed.message == {**make_message("echo", "pic", "+15550001111", media=["https://x/a.jpg"],
                                          sid="SM" + "b" * 32, from_city="PORTLAND", from_country="US"),
                           "session": {}}  # the conversation's session (SPEC section 8), empty at first


def test_refused_requests_raise(tester: AppTester) -> None:
    """A feed the webhook refuses (here a missing From) raises WebhookRefused with the status."""
    with pytest.raises(WebhookRefused) as caught:
        feed(tester, From=None)
    assert caught.value.status == 400 and "From" in caught.value.body


def test_unknown_topic_and_unknown_keys_are_errors(tester: AppTester) -> None:
    """An unknown topic, or a lower-case key that is no message key, is a mistake reported at once."""
    with pytest.raises(ConfigurationError, match="nope"):
        feed(tester, topic="nope")
    with pytest.raises(TypeError, match="colour"):
        feed(tester, colour="red")


# --- set-up and clean-up ---------------------------------------------------


def test_close_gives_the_app_back(app: pyrowire.App, clock: Clock) -> None:
    """While open the tester is the app's runtime with sandboxed settings; close() restores the app's own."""
    original = app.settings
    assert not original.topics["signed"].twilio.sandbox
    tester = AppTester(app, clock=clock)
    assert app.runtime is tester.runtime
    assert app.settings.topics["signed"].twilio.sandbox
    result_of(tester.close())
    assert app.runtime is None
    assert app.settings is original
    with pytest.raises(pyrowire.NotRunning):
        result_of(app.sms(make_message(reply="x")))


def test_profile_selects_the_key_prefix(app: pyrowire.App, clock: Clock) -> None:
    """The dev profile is used by default; profile= names another, whose key prefix the store uses."""
    with AppTester(app, clock=clock) as dev:
        assert dev.profile.name == "dev" and dev.store.prefix == "pyrowire"
    with AppTester(app, clock=clock, profile="PROD") as prod:
        assert prod.store.prefix == "live"
        assert result_of(prod.feed("yo", body="yo")).accepted


@pytest_twisted.ensureDeferred
async def test_async_context_manager(app: pyrowire.App) -> None:
    """``async with AppTester(app)`` feeds on the real reactor and restores the app when it ends."""
    async with AppTester(app) as tester:
        fed = await tester.feed("echo", body="abc")
        assert fed.sent[0]["body"] == "cba"
    assert app.runtime is None


def test_plain_value_handler_succeeds_with_succeed(app: pyrowire.App, tester: AppTester) -> None:
    """A handler returning an already-fired Deferred completes within the feed."""

    @app.handler(topic="echo")
    def fired(message: dict[str, Any]) -> Deferred[int]:
        return succeed(42)

    assert feed(tester).result == 42

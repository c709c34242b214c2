"""Opt-out keywords (SPEC section 9): STOP, START, HELP answered at once, and no reply reaching an opted-out number."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.internet.defer import fail
from twisted.internet.task import Clock

import pyrowire
from pyrowire.errors import TwilioError
from pyrowire.metrics import Metrics
from pyrowire.testing import AppTester, Fed
from tests.deferreds import result_of
from tests.unit.test_worker import Harness

NUMBER = "+15551234567"
SETTINGS = {
    "TOPICS": {
        "echo": {"accept_response": "ok", "help_response": "Text anything and we echo it. STOP to stop."},
        "legacy": {"accept_response": "ok", "opt_out": False},
    },
    "PROFILES": {"dev": {"debug": True}},
}


@pytest.fixture
def app() -> pyrowire.App:
    app = pyrowire.App(SETTINGS)
    app.hooked: list[dict[str, Any]] = []  # type: ignore[attr-defined]

    async def echo(message: dict[str, Any]) -> Any:
        message["reply"] = message["message"]
        return {"sid": await app.sms(message)}

    app.handler(topic="echo")(echo)
    app.handler(topic="legacy")(echo)

    @app.on_opt_out(topic="echo")
    def noted(message: dict[str, Any]) -> None:
        app.hooked.append(dict(message))  # type: ignore[attr-defined]

    return app


@pytest.fixture
def tester(app: pyrowire.App) -> Iterator[AppTester]:
    with AppTester(app, clock=Clock()) as t:
        yield t


def feed(tester: AppTester, body: str, topic: str = "echo", **kwargs: Any) -> Fed:
    return cast(Fed, result_of(tester.feed(topic, body=body, number=NUMBER, **kwargs)))


@pytest.mark.parametrize("word", ["STOP", "stop", " Stop ", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT",
                                  "REVOKE", "OPTOUT"])
def test_an_opt_out_word_is_answered_empty_and_silences_replies(tester: AppTester, app: pyrowire.App,
                                                                word: str) -> None:
    """Any opt-out word, trimmed and in any case, answers <Response/>; a reply to that number then fires None."""
    stop = feed(tester, word)
    assert stop.twiml.endswith("<Response/>") and stop.answer is None
    assert stop.record is not None and stop.record["result"] == {"keyword": "out", "opted_out": True}
    assert app.hooked[-1]["opted_out"] is True  # type: ignore[attr-defined]
    assert result_of(app.opted_out("echo", NUMBER)) is True
    later = feed(tester, "hello again")
    assert later.result == {"sid": None} and later.sent == []


def test_start_opts_back_in_and_the_handler_never_sees_keywords(tester: AppTester, app: pyrowire.App) -> None:
    """START (or UNSTOP, YES) opts back in; neither keyword reached the handler, both reached the hook."""
    feed(tester, "STOP")
    start = feed(tester, "yes")
    assert start.twiml.endswith("<Response/>")
    assert [m["opted_out"] for m in app.hooked] == [True, False]  # type: ignore[attr-defined]
    assert result_of(app.opted_out("echo", NUMBER)) is False
    assert [m["body"] for m in feed(tester, "hello").sent] == ["hello"]


def test_help_is_answered_with_help_response(tester: AppTester, app: pyrowire.App) -> None:
    """HELP and INFO get the topic's help_response as TwiML, and opt nobody in or out."""
    for word in ("HELP", "info"):
        fed = feed(tester, word)
        assert fed.answer == "Text anything and we echo it. STOP to stop."
        assert fed.record is not None and fed.record["result"] == {"keyword": "help"}
    assert app.hooked == []  # type: ignore[attr-defined]


def test_a_twilio_retry_of_stop_gets_the_same_answer(tester: AppTester) -> None:
    """A repeated MessageSid of a keyword message is answered as the first time and not queued again."""
    first = feed(tester, "HELP", sid="SM" + "h" * 32)
    again = feed(tester, "HELP", sid="SM" + "h" * 32)
    assert again.twiml == first.twiml and not again.accepted


def test_opt_out_false_treats_the_words_as_ordinary_texts(tester: AppTester) -> None:
    """With opt_out: False, STOP is handled like any text, as the 2014 pyrowire did."""
    fed = feed(tester, "STOP", topic="legacy")
    assert fed.answer == "ok"
    assert [m["body"] for m in fed.sent] == ["STOP"]


class _OptedOutAtTwilio:
    """Twilio refusing a send because the number replied STOP to the sending number (error 21610)."""

    calls = 0

    def send(self, creds: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return fail(TwilioError(21610, "Attempt to send to unsubscribed recipient", 400))


TWILIO = {"account_sid": "AC" + "1" * 32, "auth_token": "token", "from_number": "+15005550006"}


def test_twilio_21610_on_a_send_opts_the_number_out_and_fires_none() -> None:
    """A send Twilio refuses with 21610 fires None, opts the number out and is counted suppressed; no more tries."""
    twilio = _OptedOutAtTwilio()
    h = Harness(client=twilio, twilio=TWILIO)
    h.runtime.sender.metrics = metrics = Metrics(["echo"])
    sids: list[Any] = []

    async def handler(message: dict[str, Any]) -> Any:
        message["reply"] = "one"
        sids.append(await h.app.sms(message))
        sids.append(await h.app.sms(message))
        return message

    h.start(handler)
    h.queue("SM1")
    assert sids == [None, None]
    assert twilio.calls == 1  # the second send knew
    assert result_of(h.app.opted_out("echo", "+15551234567")) is True
    [record] = h.records("complete")
    assert record["sids"] == []
    text, _ = metrics.render()
    assert b'pyrowire_twilio_sends_total{outcome="suppressed",topic="echo"} 2.0' in text

"""Test an application's handlers and validators in memory: no Redis, no Twilio, no network.

:class:`AppTester` feeds a message through the real webhook (signed when the
topic checks signatures, so validators, signatures and TwiML are the real
ones), then runs the topic's handler exactly as a worker does, over an
in-memory store. Every topic is put in the sandbox for the tester, so
``app.sms`` and ``app.mms`` are captured and never reach Twilio::

    import pytest_twisted
    from pyrowire.testing import AppTester, make_message

    from app import app

    @pytest_twisted.ensureDeferred
    async def test_echo_replies():
        async with AppTester(app) as tester:
            fed = await tester.feed("echo", body="hello", number="+15551234567")
        assert fed.accepted and fed.answer == "Great, we'll get right back to you."
        assert [m["body"] for m in fed.sent] == ["hello"]

    @pytest_twisted.ensureDeferred
    async def test_rude_words_are_refused():
        async with AppTester(app) as tester:
            assert await tester.validate("echo", body="oh shit") == ("profanity", "No profanity, please.")

By default the tester runs on the global reactor, so handlers may use
``deferLater(reactor, ...)``; pass ``clock=task.Clock()`` for fully
deterministic tests (``feed`` then fires once you advance the clock past what
the handler waits for). Each feed runs the handler once (``max_attempts`` is
1 for the tester), and a handler's exception is reported as ``Fed.error``
rather than logged as an error. The tester installs itself as the app's
runtime and settings; ``close()`` (or leaving ``async with``) restores both.
With ``twisted.trial``, ``self.addCleanup(tester.close)``.
"""

from __future__ import annotations

import json
import mimetypes
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType, TracebackType
from typing import Any, cast
from urllib.parse import quote, urlencode

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.resource import Resource, getChildForRequest

from pyrowire.app import App
from pyrowire.calls import call_user
from pyrowire.errors import ConfigurationError, PyrowireError
from pyrowire.message import DEFAULT_CONTENT_TYPE, parse_message
from pyrowire.outbound import Sender
from pyrowire.runtime import Runtime
from pyrowire.settings import Settings, Topic
from pyrowire.signature import compute
from pyrowire.store import Taken
from pyrowire.testing.memory import MemoryStore
from pyrowire.validators import first_failure
from pyrowire.webhook import Webhook
from pyrowire.worker import TopicWorker

__all__ = ["AppTester", "Fed", "WebhookRefused", "make_message"]

DEFAULT_NUMBER = "+15551234567"
DEFAULT_TO = "+15005550006"
_URL = "http://localhost/queue/"
# message keys -> the Twilio parameter carrying them
_PARAMS = {"sid": "MessageSid", "message": "Body", "number": "From", "to": "To", "from_city": "FromCity",
           "from_state": "FromState", "from_country": "FromCountry", "from_zip": "FromZip"}
_KEYS = ("message", "number", "sid", "topic", "to", "from_city", "from_state", "from_country", "from_zip",
         "media", "reply")


class WebhookRefused(PyrowireError):
    """The webhook answered something other than 200 (a 400, 403, 404 or 413): the feed was refused."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"the webhook answered {status}: {body.strip()}")
        self.status = status
        self.body = body


def _media(media: str | Sequence[str] | Mapping[str, str] | None) -> dict[str, Any]:
    if media is None:
        return {"count": 0, "media": {}}
    if isinstance(media, str):
        media = [media]
    if not isinstance(media, Mapping):
        media = {url: mimetypes.guess_type(url)[0] or DEFAULT_CONTENT_TYPE for url in media}
    return {"count": len(media), "media": dict(media)}


def make_message(topic: str = "echo", body: str = "hello", number: str = DEFAULT_NUMBER,
                 media: str | Sequence[str] | Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """A message dict as SPEC section 5 describes it, with Twilio-like defaults; ``overrides`` replace keys.

    ``media`` is one URL, a list of URLs (content types guessed from their names)
    or a dict of URL to content type.
    """
    unknown = sorted(set(overrides) - set(_KEYS))
    if unknown:
        raise TypeError(f"make_message() got keys a message does not have: {', '.join(unknown)}")
    message: dict[str, Any] = {
        "message": body, "number": number, "sid": "SM" + uuid.uuid4().hex, "topic": topic, "to": DEFAULT_TO,
        "from_city": None, "from_state": None, "from_country": None, "from_zip": None,
        "media": _media(media), "reply": None,
    }
    message.update(overrides)
    return message


def _twilio_params(message: Mapping[str, Any], topic: Topic) -> dict[str, str]:
    """The webhook parameters Twilio would send for ``message``."""
    params = {param: str(message[key]) for key, param in _PARAMS.items() if message.get(key) is not None}
    media = message["media"]["media"]
    params.update(NumMedia=str(len(media)), SmsMessageSid=params.get("MessageSid", ""), SmsStatus="received",
                  NumSegments="1", ApiVersion="2010-04-01",
                  AccountSid=topic.twilio.account_sid or "AC" + "0" * 32)
    for i, (url, content_type) in enumerate(media.items()):
        params[f"MediaUrl{i}"] = url
        params[f"MediaContentType{i}"] = content_type
    return params


def _answer(twiml: str) -> str | None:
    found = ET.fromstring(twiml).find("Message")
    return None if found is None else found.text or ""


@dataclass(frozen=True)
class Fed:
    """What feeding one message did: the webhook's answer, the handler's outcome, what it sent."""

    twiml: str                       # the TwiML the webhook answered
    answer: str | None               # the text of its <Message>, None for <Response/>
    accepted: bool                   # queued: validators passed and the MessageSid was new
    message: dict[str, Any]          # the message handed to validators and handler (as the handler left it)
    result: Any = None               # what the handler returned
    error: BaseException | None = None  # the exception the handler raised
    failure: Failure | None = None   # the same, as a Failure with its traceback
    sent: list[dict[str, Any]] = field(default_factory=list)  # sms/mms captured while handling this message
    record: dict[str, Any] | None = None  # the complete or error record the worker wrote


@dataclass
class _Outcome:
    message: dict[str, Any] | None = None
    result: Any = None
    failure: Failure | None = None
    record: dict[str, Any] | None = None


def _forward(event: dict[str, Any]) -> None:
    """The worker's log events, but for its handler failures, which the tester reports as ``Fed.error``."""
    if not event.get("handling_failed"):
        globalLogPublisher(event)


class _Worker(TopicWorker):
    log = Logger(observer=cast(ILogObserver, _forward))


class _NoTwilio:
    """Every topic is in the sandbox for the tester, so nothing may reach this."""

    def send(self, creds: Any, **kwargs: Any) -> Any:
        raise AssertionError("pyrowire.testing never sends to Twilio")


class _CapturingSender(Sender):
    """The real sandbox sender, also keeping each outbound message in ``captured``."""

    def __init__(self, store: Any, clock: IReactorTime) -> None:
        super().__init__(_NoTwilio(), store, clock)
        self.captured: list[dict[str, Any]] = []

    async def send(self, topic: Topic, *, to: str, body: str | None, media_urls: Sequence[str] = (),
                   in_reply_to: str | None = None) -> str:
        sid = await super().send(topic, to=to, body=body, media_urls=media_urls, in_reply_to=in_reply_to)
        self.captured.append({"sid": sid, "to": to, "from": topic.twilio.from_number
                              or topic.twilio.messaging_service_sid, "body": body,
                              "media_urls": list(media_urls), "in_reply_to": in_reply_to})
        return sid


class _TesterStore(MemoryStore):
    """A MemoryStore that notes which MessageSids a webhook call queued."""

    def __init__(self, clock: IReactorTime, prefix: str) -> None:
        super().__init__(clock, prefix)
        self.queued: set[str] = set()

    async def accept(self, topic: str, sid: str, answer: str, payload: str | None,
                     conversation: str | None = None, opt: str = "", sender: str = "") -> str | None:
        prior = await super().accept(topic, sid, answer, payload, conversation, opt, sender)
        if prior is None and payload:
            self.queued.add(sid)
        return prior


class _Pumped(Resource):
    """The webhook resource, flushing the StubTreq when a response finishes after ``render`` returned."""

    isLeaf = True

    def __init__(self, inner: Any, finished: Any) -> None:
        super().__init__()
        self.inner = inner
        self.finished = finished

    def render(self, request: Any) -> Any:
        request.notifyFinish().addBoth(lambda _: self.finished())
        return getChildForRequest(self.inner, request).render(request)


class AppTester:
    """Feed messages to an App's topics in memory and see what it answers, returns and sends."""

    def __init__(self, app: App, clock: IReactorTime | None = None, profile: str | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.app = app
        self.clock = clock
        self.original_settings = app.settings
        profiles = self.original_settings.profiles
        self.profile = (self.original_settings.profile(profile) if profile is not None
                        else profiles.get("dev") or next(iter(profiles.values())))
        topics = {name: replace(t, twilio=replace(t.twilio, sandbox=True), max_attempts=1)
                  for name, t in self.original_settings.topics.items()}
        self.settings = Settings(topics=MappingProxyType(topics), profiles=profiles)
        self.store = _TesterStore(clock, self.profile.key_prefix)
        self._sender = _CapturingSender(self.store, clock)
        self.runtime = Runtime(self.store, self._sender, clock, worker_id="pyrowire-testing")
        self._popper = self.store.popper()
        self._done: dict[str, Deferred[_Outcome]] = {}
        self._flushing = self._again = False
        self._previous_runtime = app.runtime
        app.use_settings(self.settings)
        app.runtime = self.runtime
        self.closed = False
        webhook = Webhook(app, self.store, clock, public_url=None)
        self._stub: Any = StubTreq(_Pumped(webhook.resource(), self._flush))

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Every outbound message captured so far, oldest first."""
        return list(self._sender.captured)

    # --- feeding -----------------------------------------------------------

    def feed(self, topic: str, body: str = "hello", number: str = DEFAULT_NUMBER,
             media: str | Sequence[str] | Mapping[str, str] | None = None, **overrides: Any) -> Deferred[Fed]:
        """POST a message to the topic's webhook and run its handler; fires with a :class:`Fed`.

        ``overrides`` are message keys (``sid``, ``to``, ``from_city`` …) or raw
        Twilio parameters (``FromCountry="US"``; None leaves a parameter out).
        """
        return Deferred.fromCoroutine(self._feed(topic, body, number, media, overrides))

    async def _feed(self, name: str, body: str, number: str, media: Any, overrides: dict[str, Any]) -> Fed:
        topic = self._topic(name)
        if name not in self.app.handlers:
            raise ConfigurationError("topic", f"topic {name!r} has no handler")
        raw = {k: v for k, v in overrides.items() if k[:1].isupper()}
        unknown = sorted(k for k in overrides if k not in raw and k not in _PARAMS)
        if unknown:
            raise TypeError(f"feed() got keys it cannot send: {', '.join(unknown)}")
        message = make_message(name, body, number, media, **{k: v for k, v in overrides.items() if k not in raw})
        params = _twilio_params(message, topic)
        for key, value in raw.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = str(value)
        sid = params.get("MessageSid", "")
        first = len(self._sender.captured)
        status, twiml = await self._post(topic, params)
        if status != 200:
            raise WebhookRefused(status, twiml)
        accepted = sid in self.store.queued
        outcome = _Outcome()
        if accepted:
            self.store.queued.discard(sid)
            waiting = self._done[sid] = Deferred()
            await self._work(topic)
            outcome = await waiting
        sent = [m for m in self._sender.captured[first:] if m["in_reply_to"] == sid]
        failure = outcome.failure
        return Fed(twiml=twiml, answer=_answer(twiml), accepted=accepted,
                   message=outcome.message if outcome.message is not None else parse_message(name, params),
                   result=outcome.result, error=None if failure is None else failure.value, failure=failure,
                   sent=sent, record=outcome.record)

    def _topic(self, name: str) -> Topic:
        topic = self.app.settings.topics.get(name)
        if topic is None:
            known = ", ".join(sorted(self.app.settings.topics))
            raise ConfigurationError("topic", f"unknown topic {name!r} (configured: {known})")
        return topic

    async def _post(self, topic: Topic, params: dict[str, str]) -> tuple[int, str]:
        """POST ``params`` to the real webhook, signed as Twilio would; (status, body)."""
        url = _URL + quote(topic.name, safe="")
        headers = {"Content-Type": ["application/x-www-form-urlencoded"]}
        if topic.validate_signature:
            headers["X-Twilio-Signature"] = [compute(url, params, topic.twilio.auth_token or "")]
        d = self._stub.request("POST", url, data=urlencode(params).encode(), headers=headers)
        self._flush()
        response = await d
        content = response.content()
        self._flush()
        body: bytes = await content
        return response.code, body.decode("utf-8")

    def _flush(self) -> None:
        """Pump the in-memory connections; a call while pumping makes the pumping go round once more."""
        if self._flushing:
            self._again = True
            return
        self._flushing = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._stub.flush()
        finally:
            self._flushing = False

    # --- handling, as a worker does ------------------------------------------

    async def _work(self, topic: Topic) -> None:
        """Take the topic's queued messages one at a time and handle them, as a worker loop would."""
        while True:
            taken = await self.store.take(self._popper, topic.name, self.runtime.worker_id)
            if taken is None:
                return
            await self._handle(topic, taken)

    async def _handle(self, topic: Topic, taken: Taken) -> None:
        sid = str(json.loads(taken.payload)["message"].get("sid", ""))
        outcome = _Outcome()
        handler = self.app.handlers[topic.name]

        def run(message: dict[str, Any]) -> Deferred[Any]:
            outcome.message = message
            d = call_user(handler, message)

            def returned(result: Any) -> Any:
                outcome.result = result
                return result

            def raised(failure: Failure) -> Failure:
                outcome.failure = failure
                return failure

            return d.addCallbacks(returned, raised)

        waiting = self._done.pop(sid, None)
        try:
            hooks = (self.app.opt_out_hooks.get(topic.name), self.app.status_hooks.get(topic.name))
            await _Worker(self.runtime, topic, run, 1, 0.0, *hooks).handle(taken)
            outcome.record = await self._record(topic.name, sid)
        except BaseException:
            if waiting is None:
                raise
            waiting.errback()
            return
        if waiting is not None:
            waiting.callback(outcome)

    async def _record(self, topic: str, sid: str) -> dict[str, Any] | None:
        keys = self.store.keys(topic)
        for key in (keys.complete, keys.errors):
            for item in await self.store.lrange(key, 0, 99):
                record: dict[str, Any] = json.loads(item)
                if record.get("message", {}).get("sid") == sid:
                    return record
        return None

    # --- validators --------------------------------------------------------

    def validate(self, topic: str, body: str = "hello", number: str = DEFAULT_NUMBER,
                 media: str | Sequence[str] | Mapping[str, str] | None = None,
                 **overrides: Any) -> Deferred[tuple[str, str] | None]:
        """Run the topic's validators on a message; fires with (name, failure message) of the first that fails."""
        conf = self._topic(topic)
        message = make_message(topic, body, number, media, **overrides)
        return Deferred.fromCoroutine(first_failure(self.app.checks(conf), message))

    # --- closing -----------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Give the app back its own settings and runtime."""
        if not self.closed:
            self.closed = True
            if self.app.runtime is self.runtime:
                self.app.runtime = self._previous_runtime
            self.app.use_settings(self.original_settings)
        return succeed(None)

    async def __aenter__(self) -> AppTester:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __enter__(self) -> AppTester:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

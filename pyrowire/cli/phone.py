"""A phone in the terminal: ``pyrowire send`` and ``pyrowire chat``.

:class:`Phone` posts a Twilio-like (and, given an auth token, correctly signed) webhook
to a pyrowire URL, reads the TwiML answer, and can then wait for the sandbox replies
the handler wrote to the topic's outbox in Redis. Every effect comes in: the HTTP
client, the clock, the store the outbox is read from, and where the text goes.
"""

from __future__ import annotations

import json
import mimetypes
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlencode, urlsplit
from xml.etree import ElementTree

from twisted.internet.defer import CancelledError, Deferred, DeferredQueue
from twisted.internet.error import ConnectError, ConnectingCancelledError
from twisted.internet.error import ConnectionRefusedError as Refused
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from zope.interface import implementer

from pyrowire import signature
from pyrowire.keys import INVALID, TopicKeys

DEFAULT_TO = "+15005550006"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
HTTP_TIMEOUT = 10.0
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.1
SCAN = 200  # how many of the newest outbox entries and records each poll looks at
_COUNTRIES = {"+1": "US", "+44": "GB", "+33": "FR", "+49": "DE", "+61": "AU"}


class PhoneError(Exception):
    """Something went wrong sending or waiting; the text is one line for the user."""


class Output(Protocol):
    def write(self, text: str, /) -> object: ...


class Outbox(Protocol):
    """What :class:`Phone` needs of a store: RedisStore and MemoryStore both have it."""

    def keys(self, topic: str) -> TopicKeys: ...

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[str]: ...

    async def answer_for(self, topic: str, sid: str) -> str | None: ...


def message_sid() -> str:
    """A fresh SID shaped like Twilio's for an inbound message: ``SM`` and 32 hex digits."""
    return "SM" + uuid.uuid4().hex


def content_type(url: str) -> str:
    """The media type a URL's extension suggests, as Twilio reports it (``application/octet-stream`` if unknown)."""
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    return guessed or "application/octet-stream"


def topic_of(url: str) -> str:
    """The topic named by a webhook URL ``…/queue/<topic>``."""
    parts = [unquote(p) for p in urlsplit(url).path.split("/")]
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "queue" and parts[i + 1]:
            return parts[i + 1]
    raise PhoneError(f"{url} is not a webhook URL: expected .../queue/<topic>")


def build_params(sender: str, body: str, *, to: str = DEFAULT_TO, media: Sequence[str] = (),
                 sid: str | None = None, account_sid: str = DEFAULT_ACCOUNT_SID) -> dict[str, str]:
    """The parameters Twilio posts for an inbound SMS (or MMS, with ``media``)."""
    sid = sid or message_sid()
    country = next((c for prefix, c in _COUNTRIES.items() if sender.startswith(prefix)), "")
    params = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "AccountSid": account_sid,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": str(len(media)),
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
        "FromCity": "",
        "FromState": "",
        "FromZip": "",
        "FromCountry": country,
    }
    for i, url in enumerate(media):
        params[f"MediaUrl{i}"] = url
        params[f"MediaContentType{i}"] = content_type(url)
    return params


def sign(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """The X-Twilio-Signature Twilio would send for this POST."""
    return signature.compute(url, {k: [v] for k, v in params.items()}, auth_token)


def twiml_messages(text: str) -> list[str]:
    """The texts of a TwiML answer's ``<Message>`` elements (``[]`` for ``<Response/>``)."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        raise PhoneError(f"the answer is not TwiML ({e}): {text[:80]!r}") from None
    if root.tag != "Response":
        raise PhoneError(f"the answer is not TwiML: its root is <{root.tag}>, not <Response>")
    messages = []
    for element in root.iter("Message"):
        body = element.find("Body")
        messages.append((body.text if body is not None else element.text) or "")
    return messages


def describe_reply(record: Mapping[str, Any]) -> str:
    """One line for a sandbox reply: ``< text`` and its media, if any."""
    text = str(record.get("body") or "")
    media = record.get("media_urls") or []
    if media:
        text = f"{text} [media: {', '.join(map(str, media))}]".strip()
    return "< " + text.replace("\n", "\n  ")


@dataclass
class Answer:
    """What the webhook answered: the MessageSid sent, the raw TwiML and its messages."""

    sid: str
    topic: str
    twiml: str
    messages: list[str]


@dataclass
class Waited:
    """The outcome of waiting for replies: ``complete``, ``failed``, ``refused`` or ``timeout``."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "timeout"
    error: str | None = None


def _plain(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return re.sub(r"\s+", " ", text)[:200]


class Phone:
    """Sends texts to one webhook URL as one phone number would."""

    def __init__(self, url: str, sender: str, *, http: Any, clock: IReactorTime, to: str = DEFAULT_TO,
                 auth_token: str | None = None, account_sid: str = DEFAULT_ACCOUNT_SID,
                 timeout: float = HTTP_TIMEOUT, outbox: Outbox | None = None) -> None:
        self.url = url
        self.sender = sender
        self.http = http
        self.clock = clock
        self.to = to
        self._auth_token = auth_token
        self.account_sid = account_sid
        self.timeout = timeout
        self.outbox = outbox
        self.topic = topic_of(url)

    def __repr__(self) -> str:
        return f"<Phone {self.sender} -> {self.url}>"

    async def send(self, body: str, media: Sequence[str] = ()) -> Answer:
        """Post one inbound message; answer the TwiML, or raise PhoneError with one line."""
        params = build_params(self.sender, body, to=self.to, media=media, account_sid=self.account_sid)
        headers = {"Content-Type": ["application/x-www-form-urlencoded"], "User-Agent": ["pyrowire-send"]}
        if self._auth_token:
            headers["X-Twilio-Signature"] = [sign(self.url, params, self._auth_token)]
        data = urlencode(params).encode("utf-8")
        timed_out: list[bool] = []

        async def post() -> tuple[int, str, bytes]:
            response = await self.http.post(self.url, data=data, headers=headers)
            content: bytes = await response.content()
            phrase = response.phrase.decode("latin-1") if isinstance(response.phrase, bytes) else response.phrase
            return response.code, str(phrase or ""), content

        d = Deferred.fromCoroutine(post())

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(self.timeout, expire)
        try:
            code, phrase, content = await d
        except (CancelledError, ConnectingCancelledError, ResponseFailed) as e:
            if timed_out:
                raise PhoneError(f"no answer from {self.url} within {self.timeout:g} s") from None
            raise PhoneError(f"cannot connect to {self.url}: {_reason(e)}") from None
        except (ConnectError, OSError) as e:  # DNSLookupError is an OSError
            raise PhoneError(f"cannot connect to {self.url}: {_reason(e)}") from None
        finally:
            if timer.active():
                timer.cancel()
        if not 200 <= code < 300:
            said = _plain(content)
            raise PhoneError(f"{self.url} answered {code} {phrase}".rstrip() + (f": {said}" if said else ""))
        twiml = content.decode("utf-8", "replace")
        return Answer(params["MessageSid"], self.topic, twiml, twiml_messages(twiml))

    async def wait(self, sid: str, seconds: float = WAIT_SECONDS,
                   on_reply: Callable[[dict[str, Any]], object] = lambda _r: None) -> Waited:
        """Poll the outbox for the replies to ``sid`` until its handler is done or ``seconds`` pass.

        The handler is done when its exchange is recorded (complete, or failed); each new
        reply is handed to ``on_reply`` as soon as it is seen.
        """
        if self.outbox is None:
            raise PhoneError("waiting for replies needs Redis")
        keys = self.outbox.keys(self.topic)
        deadline = self.clock.seconds() + seconds
        waited = Waited()
        seen: set[str] = set()
        answer = await self.outbox.answer_for(self.topic, sid)
        if answer is not None and answer.startswith(INVALID):
            # a validator refused it: the TwiML answer was the one reply and nothing was queued
            waited.outcome = "refused"
            waited.error = answer[len(INVALID):]
            return waited
        while True:
            # the record is read before the outbox: a handler's replies are pushed before it is recorded
            complete = await self._record(keys.complete, sid)
            failed = None if complete else await self._record(keys.errors, sid)
            for raw in reversed(await self.outbox.lrange(keys.outbox, 0, SCAN - 1)):
                reply = _json(raw)
                if reply is not None and reply.get("in_reply_to") == sid and reply.get("sid") not in seen:
                    seen.add(str(reply.get("sid")))
                    waited.replies.append(reply)
                    on_reply(reply)
            if complete is not None:
                waited.outcome = "complete"
                return waited
            if failed is not None:
                waited.outcome = "failed"
                waited.error = str(failed.get("error") or "the handler failed")
                return waited
            if self.clock.seconds() >= deadline:
                return waited
            await deferLater(self.clock, min(POLL_SECONDS, max(0.0, deadline - self.clock.seconds())))

    async def _record(self, key: str, sid: str) -> dict[str, Any] | None:
        assert self.outbox is not None
        for raw in await self.outbox.lrange(key, 0, SCAN - 1):
            record = _json(raw)
            message = record.get("message") if record else None
            if record is not None and isinstance(message, dict) and message.get("sid") == sid:
                return record
        return None


def _json(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _reason(e: BaseException) -> str:
    if isinstance(e, ResponseFailed) and e.reasons:
        first = e.reasons[0]
        value = first.value if isinstance(first, Failure) else first
        if isinstance(value, BaseException):
            return _reason(value)
    if isinstance(e, (Refused, ConnectionRefusedError)):
        return "connection refused"
    text = str(e).strip().rstrip(".")
    return text or type(e).__name__


async def converse(phone: Phone, body: str, out: Output, *, media: Sequence[str] = (), twiml: bool = False,
                   wait: float | None = None) -> Waited | None:
    """Send one text and write the answer (and, with ``wait``, each reply as it comes) to ``out``.

    With ``twiml`` the answer is the TwiML document exactly as the webhook returned it (``send``);
    without, the text of its messages, as a phone shows them (``chat``).
    """
    answer = await phone.send(body, media)
    if twiml:
        out.write(answer.twiml if answer.twiml.endswith("\n") else answer.twiml + "\n")
    elif answer.messages:
        for text in answer.messages:
            out.write(text + "\n")
    else:
        out.write("(empty answer)\n")
    if wait is None:
        return None
    waited = await phone.wait(answer.sid, wait, lambda reply: out.write(describe_reply(reply) + "\n"))
    if waited.outcome == "complete" and not waited.replies:
        out.write("(handled; no sandbox reply)\n")
    if waited.outcome == "refused":
        out.write(f"(refused by the {waited.error} validator: nothing was queued)\n")
    return waited


def wait_problem(waited: Waited, sid: str, seconds: float) -> str | None:
    """The error line for a wait that got nothing useful, else None."""
    if waited.outcome == "failed":
        return f"the handler failed on {sid}: {waited.error}"
    if waited.outcome == "timeout" and not waited.replies:
        return f"no reply to {sid} within {seconds:g} s"
    return None


async def chat(phone: Phone, next_line: Callable[[], Deferred[str | None]], out: Output, err: Output,
               wait: float = WAIT_SECONDS, echo: bool = False) -> int:
    """Read lines until ``None`` (end of input); send each and write what comes back.

    With ``echo`` (input that is not a terminal), each line read is written after its prompt.
    """
    while True:
        out.write("> ")
        line = await next_line()
        if line is None:
            out.write("\n")
            return 0
        if echo:
            out.write(line + "\n")
        if not line.strip():
            continue
        try:
            waited = await converse(phone, line, out, wait=wait)
        except PhoneError as e:
            err.write(f"pyrowire: error: {e}\n")
            continue
        assert waited is not None
        problem = wait_problem(waited, "it", wait)
        if problem:
            err.write(f"pyrowire: {problem}\n")


def lines_from(lines: Iterable[str]) -> Callable[[], Deferred[str | None]]:
    """A ``next_line`` for :func:`chat` over a fixed list of lines (for tests and scripts)."""
    queue: DeferredQueue[str | None] = DeferredQueue()
    for line in lines:
        queue.put(line.rstrip("\r\n"))
    queue.put(None)
    return queue.get


@implementer(IHalfCloseableProtocol)
class Terminal(LineReceiver):
    """Standard input and output as a protocol (for ``twisted.internet.stdio.StandardIO``).

    Lines read go into a queue :func:`chat` takes them from; end of input is ``None``.
    Output is written through the transport, which owns file descriptor 1.
    """

    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: DeferredQueue[str | None] = DeferredQueue()
        self.closed: Deferred[None] = Deferred()
        self._ended = False

    def next_line(self) -> Deferred[str | None]:
        return self.lines.get()

    def write(self, text: str, /) -> None:
        if self.transport is not None:
            self.transport.write(text.encode("utf-8"))

    def lineReceived(self, line: bytes) -> None:
        self.lines.put(line.decode("utf-8", "replace").rstrip("\r"))

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            rest = self.clearLineBuffer()
            if rest.strip():
                self.lines.put(rest.decode("utf-8", "replace").rstrip("\r"))
            self.lines.put(None)

    def readConnectionLost(self) -> None:
        self._end()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._end()
        if not self.closed.called:
            self.closed.callback(None)

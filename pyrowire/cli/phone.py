"""A phone in the terminal: ``pyrowire send`` and ``pyrowire chat``.

:class:`Phone` posts a Twilio-like (and, given an auth token, correctly signed) webhook
to a pyrowire URL, reads the TwiML answer, and can then wait for the replies the handler
sends, polling the daemon's ``<webhook URL>/replies`` (signed the same way) until it says
the message is handled. It needs no Redis of its own, so it works whichever Redis the
daemon uses. Every effect comes in: the HTTP client, the clock, and where the text goes.
"""

from __future__ import annotations

import json
import mimetypes
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit
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

DEFAULT_TO = "+15005550006"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
HTTP_TIMEOUT = 10.0
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.1
USER_AGENT = "pyrowire-send"
_COUNTRIES = {"+1": "US", "+44": "GB", "+33": "FR", "+49": "DE", "+61": "AU"}


class PhoneError(Exception):
    """Something went wrong sending or waiting; the text is one line for the user."""


class Output(Protocol):
    def write(self, text: str, /) -> object: ...


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
    """The X-Twilio-Signature Twilio would send for this POST (for a GET: no ``params``, the query in ``url``)."""
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


def replies_url(url: str, sid: str) -> str:
    """Where the daemon answers the replies to ``sid`` for the webhook at ``url``: ``<url>/replies?MessageSid=…``."""
    parts = urlsplit(url)
    query = urlencode({"MessageSid": sid})
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/replies",
                       f"{parts.query}&{query}" if parts.query else query, ""))


def describe_reply(reply: Mapping[str, Any]) -> str:
    """One line for a reply: ``< text`` and its media, if any."""
    text = str(reply.get("body") or "")
    media = reply.get("media") or []
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
    """Sends texts to one webhook URL as one phone number would, and reads the replies to them."""

    def __init__(self, url: str, sender: str, *, http: Any, clock: IReactorTime, to: str = DEFAULT_TO,
                 auth_token: str | None = None, account_sid: str = DEFAULT_ACCOUNT_SID,
                 timeout: float = HTTP_TIMEOUT) -> None:
        self.url = url
        self.sender = sender
        self.http = http
        self.clock = clock
        self.to = to
        self._auth_token = auth_token
        self.account_sid = account_sid
        self.timeout = timeout
        self.topic = topic_of(url)

    def __repr__(self) -> str:
        return f"<Phone {self.sender} -> {self.url}>"

    async def send(self, body: str, media: Sequence[str] = ()) -> Answer:
        """Post one inbound message; answer the TwiML, or raise PhoneError with one line."""
        params = build_params(self.sender, body, to=self.to, media=media, account_sid=self.account_sid)
        headers = {"Content-Type": ["application/x-www-form-urlencoded"]}
        data = urlencode(params).encode("utf-8")
        code, phrase, content = await self._request("POST", self.url, params, headers, data)
        if not 200 <= code < 300:
            raise PhoneError(_refused(self.url, code, phrase, content))
        twiml = content.decode("utf-8", "replace")
        return Answer(params["MessageSid"], self.topic, twiml, twiml_messages(twiml))

    async def _request(self, method: str, url: str, params: Mapping[str, str], headers: dict[str, list[str]],
                       data: bytes | None = None) -> tuple[int, str, bytes]:
        """One request, signed when there is an auth token: (status, phrase, body), or PhoneError with one line
        when it cannot connect or no answer comes within the timeout."""
        headers = {**headers, "User-Agent": [USER_AGENT]}
        if self._auth_token:
            headers["X-Twilio-Signature"] = [sign(url, params, self._auth_token)]
        timed_out: list[bool] = []

        async def go() -> tuple[int, str, bytes]:
            response = await self.http.request(method, url, data=data, headers=headers)
            content: bytes = await response.content()
            phrase = response.phrase.decode("latin-1") if isinstance(response.phrase, bytes) else response.phrase
            return response.code, str(phrase or ""), content

        d = Deferred.fromCoroutine(go())

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(self.timeout, expire)
        try:
            return await d
        except (CancelledError, ConnectingCancelledError, ResponseFailed) as e:
            if timed_out:
                raise PhoneError(f"no answer from {url} within {self.timeout:g} s") from None
            raise PhoneError(f"cannot connect to {url}: {_reason(e)}") from None
        except (ConnectError, OSError) as e:  # DNSLookupError is an OSError
            raise PhoneError(f"cannot connect to {url}: {_reason(e)}") from None
        finally:
            if timer.active():
                timer.cancel()

    async def wait(self, sid: str, seconds: float = WAIT_SECONDS,
                   on_reply: Callable[[dict[str, Any]], object] = lambda _r: None) -> Waited:
        """Poll the daemon for the replies to ``sid`` until it says the message is handled or ``seconds`` pass.

        Each new reply is handed to ``on_reply`` as soon as it is seen. While the daemon cannot read
        its Redis (503) the wait goes on; any other refusal is a PhoneError.
        """
        url = replies_url(self.url, sid)
        deadline = self.clock.seconds() + seconds
        waited = Waited()
        seen: set[str] = set()
        while True:
            code, phrase, content = await self._request("GET", url, {}, {"Accept": ["application/json"]})
            if code == 200:
                answer = _json(content.decode("utf-8", "replace"))
                if answer is None or not isinstance(answer.get("replies"), list):
                    raise PhoneError(f"{url} answered something else than replies: {_plain(content)!r}")
                for reply in answer["replies"]:
                    if isinstance(reply, dict) and str(reply.get("sid")) not in seen:
                        seen.add(str(reply.get("sid")))
                        waited.replies.append(reply)
                        on_reply(reply)
                if answer.get("handled"):
                    refused, error = answer.get("refused"), answer.get("error")
                    waited.outcome = "refused" if refused is not None else "failed" if error is not None else "complete"
                    waited.error = None if refused is None and error is None else str(refused or error)
                    return waited
            elif code != 503:
                raise PhoneError(_refused(url, code, phrase, content))
            if self.clock.seconds() >= deadline:
                return waited
            await deferLater(self.clock, min(POLL_SECONDS, max(0.0, deadline - self.clock.seconds())))


def _refused(url: str, code: int, phrase: str, content: bytes) -> str:
    said = _plain(content)
    return f"{url} answered {code} {phrase}".rstrip() + (f": {said}" if said else "")


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
        out.write("(handled; no reply)\n")
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

"""``pyrowire send``, ``chat`` and ``init`` in memory: StubTreq over the real webhook (and its replies), a
MemoryStore, a Clock."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qsl

import pytest
from treq.testing import StubTreq
from twilio.request_validator import RequestValidator
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

import pyrowire
from pyrowire import envelope, twiml
from pyrowire.cli import command as cli
from pyrowire.cli import deployment, phone
from pyrowire.testing.memory import MemoryStore
from pyrowire.webhook import Webhook
from tests.deferreds import result_of

TOKEN = "cli-test-auth-token"
ACCOUNT = "AC" + "2" * 32
ACCEPT = "Great, we'll get right back to you."
ACCEPT_TWIML = twiml.response(ACCEPT).decode()
NUMBER = "+15551234567"
OPEN = "http://example.com/queue/echo"
SIGNED = "http://example.com/queue/signed"

SETTINGS = {
    "TOPICS": {
        "echo": {"accept_response": ACCEPT, "validators": {"length": "Your message was empty or too long."}},
        "signed": {
            "accept_response": "signed ok",
            "twilio": {"account_sid": ACCOUNT, "auth_token": TOKEN, "from_number": "+15005550006"},
        },
    },
    "PROFILES": {"dev": {"host": "localhost", "port": 62023}},
}




class Bench:
    """The real webhook (and its replies) behind a StubTreq, a MemoryStore standing in for Redis, and a Clock;
    the worker's part is played by :meth:`reply` and :meth:`record`."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.app = pyrowire.App(SETTINGS)
        self.stub: Any = StubTreq(Webhook(self.app, self.store, self.clock, None).resource())
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.sends: dict[str, int] = {}  # inbound sid -> replies sent so far
        self.handled: list[dict[str, Any]] = []  # the messages recorded, in order

    def start(self, *argv: str, environ: dict[str, str] | None = None, http: Any = None,
              lines: Sequence[str] | None = None) -> Deferred[int]:
        effects = cli.Effects(http=http or self.stub, store_factory=cast(Any, no_redis), probe=None,
                              next_line=phone.lines_from(lines) if lines is not None else None)
        d = Deferred.fromCoroutine(cli.run(self.clock, argv, environ or {}, self.out, self.err, effects))
        self.flush()
        return d

    def run(self, *argv: str, **kwargs: Any) -> int:
        code: int = result_of(self.start(*argv, **kwargs))
        return code

    def flush(self) -> None:
        self.stub.flush()

    def queued(self, topic: str = "echo", number: str = NUMBER) -> list[dict[str, Any]]:
        """Every message accepted and not taken, oldest first: the ready one and those behind it."""
        keys = self.store.keys(topic)
        ready = result_of(Deferred.fromCoroutine(self.store.lrange(keys.queue)))
        waiting = result_of(Deferred.fromCoroutine(self.store.lrange(keys.conversation(number))))
        return [json.loads(i)["message"] for i in [*reversed(ready), *reversed(waiting)]]

    def reply(self, topic: str, to_sid: str, body: str, media: Sequence[str] = ()) -> None:
        """Record a reply to ``to_sid`` as the worker does while its handler runs."""
        index = self.sends.get(to_sid, 0)
        self.sends[to_sid] = index + 1
        out = phone.message_sid().replace("SM", "SB")
        details = json.dumps({"sid": out, "to": NUMBER, "body": body, "media": list(media)})
        result_of(Deferred.fromCoroutine(self.store.record_sent(topic, to_sid, index, out, details)))

    def record(self, topic: str, sid: str, kind: str = "complete", **extra: Any) -> None:
        """Take the topic's next message (``sid``) and record it as the worker does when its handler is done:
        ``complete``, or ``errors`` (a dead letter)."""
        taken = result_of(Deferred.fromCoroutine(self.store.take(self.store.popper(), topic, "w")))
        message = json.loads(taken.payload)["message"]
        assert message["sid"] == sid
        self.handled.append(message)
        record = json.dumps({"message": message, **extra})
        result_of(Deferred.fromCoroutine(self.store.finish(topic, "w", taken.payload, sid, record, kind, 100,
                                                           kind == "errors", message["number"])))


def no_redis(address: Any, prefix: str) -> Any:
    raise AssertionError("send and chat read replies from the daemon, not from Redis")


class Silent(Resource):
    """A webhook that never answers."""

    isLeaf = True

    def render(self, request: Any) -> Any:
        return NOT_DONE_YET


class Plain(Resource):
    """A webhook that answers one status with a plain sentence."""

    isLeaf = True

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__()
        self.status = status
        self.body = body

    def render(self, request: Any) -> bytes:
        request.setResponseCode(self.status)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return self.body


class Recorder(Resource):
    """A webhook that keeps each POST's form and signature and answers fixed TwiML; its replies (a GET) are
    never handled and keep each URL asked and its signature."""

    isLeaf = True

    def __init__(self, answer: bytes = twiml.response("hi back")) -> None:
        super().__init__()
        self.answer = answer
        self.requests: list[tuple[dict[str, str], str | None]] = []
        self.polls: list[tuple[str, str | None]] = []

    def render(self, request: Any) -> bytes:
        sig = request.getHeader(b"x-twilio-signature")
        if request.method == b"GET":
            self.polls.append((request.uri.decode(), sig.decode() if sig else None))
            request.setHeader(b"Content-Type", b"application/json")
            return b'{"handled": false, "replies": []}'
        form = dict(parse_qsl(request.content.read().decode("utf-8"), keep_blank_values=True))
        self.requests.append((form, sig.decode() if sig else None))
        request.setHeader(b"Content-Type", b"text/xml")
        return self.answer


class FailingHTTP:
    """An HTTP client whose every request fails with one exception."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        return fail(self.error)


# --- arguments ---------------------------------------------------------------


def test_send_arguments_and_defaults() -> None:
    """send takes URL, --from, --body, repeatable --media; --wait is off, bare 10 s, or a number."""
    parse = cli._parser().parse_args
    args = parse(["send", OPEN, "--from", NUMBER, "--body", "hi", "--media", "http://m/a.jpg", "--media", "http://m/b"])
    assert (args.url, args.sender, args.body, args.to) == (OPEN, NUMBER, "hi", phone.DEFAULT_TO)
    assert args.media == ["http://m/a.jpg", "http://m/b"]
    assert args.wait is None and args.auth_token is None
    assert parse(["send", OPEN, "--from", NUMBER, "--body", "hi", "--wait"]).wait == 10.0
    assert parse(["send", OPEN, "--from", NUMBER, "--body", "hi", "--wait", "2.5"]).wait == 2.5


@pytest.mark.parametrize("argv", [
    ["send", OPEN, "--body", "hi"],
    ["send", OPEN, "--from", NUMBER],
    ["send", OPEN, "--from", NUMBER, "--body", "hi", "--wait", "soon"],
    ["chat", OPEN],
    ["init", "a", "b"],
])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing --from/--body, a non-numeric --wait or an extra argument is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as e:
        cli._parser().parse_args(argv)
    assert e.value.code == 2
    assert "pyrowire" in capsys.readouterr().err


# --- parameters and signature ------------------------------------------------


def test_params_look_like_twilios() -> None:
    """The posted parameters carry a fresh SM SID, the numbers, the body and no media."""
    params = phone.build_params(NUMBER, "hello")
    assert re.fullmatch(r"SM[0-9a-f]{32}", params["MessageSid"])
    assert params["SmsMessageSid"] == params["SmsSid"] == params["MessageSid"]
    assert re.fullmatch(r"AC[0-9a-f]{32}", params["AccountSid"])
    assert (params["From"], params["To"], params["Body"], params["NumMedia"]) == (NUMBER, "+15005550006", "hello", "0")
    assert params["FromCountry"] == "US" and params["FromCity"] == params["FromZip"] == ""
    assert not any(k.startswith("Media") for k in params)
    assert phone.build_params(NUMBER, "x")["MessageSid"] != params["MessageSid"]


def test_params_carry_media_with_guessed_types() -> None:
    """Each --media URL becomes MediaUrlN with a MediaContentTypeN guessed from its extension."""
    media = ["https://m.example/cat.jpg?size=big", "https://m.example/a.PNG", "https://m.example/clip.mp4",
             "https://m.example/noext"]
    params = phone.build_params(NUMBER, "", media=media, to="+15550001111", sid="SM" + "f" * 32)
    assert params["NumMedia"] == "4" and params["To"] == "+15550001111" and params["MessageSid"] == "SM" + "f" * 32
    assert [params[f"MediaUrl{i}"] for i in range(4)] == media
    assert [params[f"MediaContentType{i}"] for i in range(4)] == [
        "image/jpeg", "image/png", "video/mp4", "application/octet-stream"]


@pytest.mark.parametrize("url", [
    "https://sms.example.com/queue/echo",
    "http://localhost:62023/queue/echo?x=1&y=2",
    "https://example.com:8443/mount/queue/caf%C3%A9",
])
def test_signature_matches_twilios_validator(url: str) -> None:
    """The X-Twilio-Signature sent is the one Twilio's own RequestValidator computes and accepts."""
    params = phone.build_params(NUMBER, "héllo & <you>", media=["https://m.example/a.gif", "https://m.example/b"])
    signature = phone.sign(url, params, TOKEN)
    validator = RequestValidator(TOKEN)
    assert signature == validator.compute_signature(url, params)
    assert validator.validate(url, params, signature)
    assert not RequestValidator("another-token").validate(url, params, signature)


def test_send_signs_with_auth_token_option_or_environment() -> None:
    """The request is signed with --auth-token, else $TWILIO_AUTH_TOKEN, and unsigned with neither."""
    bench = Bench()
    recorder = Recorder()
    stub: Any = StubTreq(recorder)
    for argv, environ in [((), {"TWILIO_AUTH_TOKEN": TOKEN}), (("--auth-token", TOKEN), {"TWILIO_AUTH_TOKEN": "x"}),
                          ((), {})]:
        d = bench.start("send", OPEN, "--from", NUMBER, "--body", "b", *argv, environ=environ, http=stub)
        stub.flush()
        assert result_of(d) == 0
    signed = [(form, sig) for form, sig in recorder.requests]
    for form, sig in signed[:2]:
        assert RequestValidator(TOKEN).validate(OPEN, form, sig)
    assert signed[2][1] is None
    assert signed[2][0]["Body"] == "b" and signed[2][0]["From"] == NUMBER


def test_account_sid_from_environment() -> None:
    """$TWILIO_ACCOUNT_SID, when set, is the AccountSid posted."""
    bench = Bench()
    recorder = Recorder()
    stub: Any = StubTreq(recorder)
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "b", environ={"TWILIO_ACCOUNT_SID": ACCOUNT}, http=stub)
    stub.flush()
    assert result_of(d) == 0
    assert recorder.requests[0][0]["AccountSid"] == ACCOUNT


# --- TwiML and URLs ------------------------------------------------------------


def test_twiml_messages() -> None:
    """The answer's <Message> texts are read, unescaped, from either form TwiML allows."""
    assert phone.twiml_messages(twiml.response("a & <b> \"c\"").decode()) == ['a & <b> "c"']
    assert phone.twiml_messages(twiml.response(None).decode()) == []
    two = "<Response><Message><Body>one</Body></Message><Message>two</Message><Message/></Response>"
    assert phone.twiml_messages(two) == ["one", "two", ""]


@pytest.mark.parametrize(("text", "why"), [("Internal error", "not TwiML"), ("<html><p>x</p></html>", "<html>")])
def test_twiml_refuses_what_is_not_twiml(text: str, why: str) -> None:
    """An answer that is not TwiML is a PhoneError saying so."""
    with pytest.raises(phone.PhoneError, match=why):
        phone.twiml_messages(text)


def test_topic_is_read_from_the_url() -> None:
    """The topic is the path segment after /queue/, also under a mount point and percent-encoded."""
    assert phone.topic_of("http://h/queue/echo") == "echo"
    assert phone.topic_of("http://h/sms/queue/caf%C3%A9/?x=1") == "café"
    with pytest.raises(phone.PhoneError, match=r"expected \.\.\./queue/<topic>"):
        phone.topic_of("http://h/echo")


def test_reply_lines() -> None:
    """A reply is one '< text' line, with its media listed."""
    assert phone.describe_reply({"body": "hi"}) == "< hi"
    assert phone.describe_reply({"body": None, "media": ["http://m/a.jpg"]}) == "< [media: http://m/a.jpg]"


@pytest.mark.parametrize(("url", "replies"), [
    ("http://h:1/queue/echo", "http://h:1/queue/echo/replies?MessageSid=SM1"),
    ("https://h/sms/queue/caf%C3%A9/", "https://h/sms/queue/caf%C3%A9/replies?MessageSid=SM1"),
    ("http://h/queue/echo?x=1", "http://h/queue/echo/replies?x=1&MessageSid=SM1"),
])
def test_replies_are_read_below_the_webhook_url(url: str, replies: str) -> None:
    """The replies to a message are asked of <webhook URL>/replies?MessageSid=…, keeping the URL's own query."""
    assert phone.replies_url(url, "SM1") == replies


# --- send against the real webhook ---------------------------------------------


def test_send_prints_the_twiml_document_and_queues_the_message() -> None:
    """send posts to the real webhook, prints the TwiML document exactly as answered, and the message is queued."""
    bench = Bench()
    assert bench.run("send", OPEN, "--from", NUMBER, "--body", "hello there") == 0
    assert bench.out.getvalue() == ACCEPT_TWIML + "\n"
    assert bench.err.getvalue() == ""
    [message] = bench.queued()
    assert (message["number"], message["message"], message["to"]) == (NUMBER, "hello there", "+15005550006")
    assert message["media"] == {"count": 0, "media": {}}


def test_send_with_media() -> None:
    """--media reaches the handler's message with its type; the TwiML answer is printed as it came."""
    bench = Bench()
    assert bench.run("send", OPEN, "--from", NUMBER, "--body", "look", "--media", "https://m.example/a.png") == 0
    assert bench.out.getvalue() == ACCEPT_TWIML + "\n"
    assert bench.queued()[0]["media"] == {"count": 1, "media": {"https://m.example/a.png": "image/png"}}


def test_signed_topic_accepts_the_signature() -> None:
    """A topic that validates signatures accepts what send signs with the right token."""
    bench = Bench()
    assert bench.run("send", SIGNED, "--from", NUMBER, "--body", "hi", "--auth-token", TOKEN) == 0
    assert bench.out.getvalue() == twiml.response("signed ok").decode() + "\n"


def test_wrong_token_is_one_403_line() -> None:
    """A signature made with the wrong token is refused: one error line with the status, exit 1."""
    bench = Bench()
    assert bench.run("send", SIGNED, "--from", NUMBER, "--body", "hi", "--auth-token", "wrong") == 1
    assert bench.out.getvalue() == ""
    [line] = bench.err.getvalue().splitlines()
    assert line.startswith(f"pyrowire: error: {SIGNED} answered 403 Forbidden")


def test_unknown_topic_is_one_404_line() -> None:
    """An unknown topic gives one error line with the status and the webhook's sentence, exit 1."""
    bench = Bench()
    assert bench.run("send", "http://example.com/queue/nope", "--from", NUMBER, "--body", "hi") == 1
    [line] = bench.err.getvalue().splitlines()
    assert line.startswith("pyrowire: error: http://example.com/queue/nope answered 404 Not Found: ")
    assert "nope" in line.split("404 Not Found: ", 1)[1]


def test_400_prints_status_and_plain_sentence() -> None:
    """A 4xx answer's plain-text sentence is printed after its status, on one line."""
    bench = Bench()
    stub: Any = StubTreq(Plain(400, b"The Body parameter\nis missing.\n"))
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", http=stub)
    stub.flush()
    assert result_of(d) == 1
    assert bench.err.getvalue() == f"pyrowire: error: {OPEN} answered 400 Bad Request: The Body parameter is missing.\n"


@pytest.mark.parametrize(("error", "why"), [
    (ConnectionRefusedError(), "connection refused"),
    (DNSLookupError("nowhere.invalid"), "nowhere.invalid"),
    (ResponseNeverReceived([Failure(ConnectionRefusedError())]), "connection refused"),
])
def test_connection_errors_are_one_line(error: Exception, why: str) -> None:
    """A failure to connect is 'cannot connect to URL: reason', one line, exit 1."""
    bench = Bench()
    assert bench.run("send", OPEN, "--from", NUMBER, "--body", "hi", http=FailingHTTP(error)) == 1
    [line] = bench.err.getvalue().splitlines()
    assert line.startswith(f"pyrowire: error: cannot connect to {OPEN}: ")
    assert why in line


def test_no_answer_times_out() -> None:
    """A webhook that never answers is given up on after --timeout seconds of the clock, with one line."""
    bench = Bench()
    stub: Any = StubTreq(Silent())
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", "--timeout", "3", http=stub)
    stub.flush()
    bench.clock.advance(2.9)
    assert not d.called
    bench.clock.advance(0.2)
    assert result_of(d) == 1
    assert bench.err.getvalue() == f"pyrowire: error: no answer from {OPEN} within 3 s\n"


def test_bad_url_is_one_line() -> None:
    """A URL without /queue/<topic> is refused before anything is sent."""
    bench = Bench()
    assert bench.run("send", "http://example.com/echo", "--from", NUMBER, "--body", "hi") == 1
    assert bench.err.getvalue() == (
        "pyrowire: error: http://example.com/echo is not a webhook URL: expected .../queue/<topic>\n")


# --- waiting for sandbox replies -------------------------------------------------


def test_wait_prints_the_replies_to_this_message_only() -> None:
    """--wait prints each sandbox reply whose in_reply_to is the MessageSid sent, then stops when it is recorded."""
    bench = Bench()
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", "--wait")
    [message] = bench.queued()
    sid = message["sid"]
    bench.reply("echo", "SM" + "0" * 32, "not for us")
    bench.reply("echo", sid, "first")
    bench.clock.advance(phone.POLL_SECONDS)
    assert bench.out.getvalue() == ACCEPT_TWIML + "\n< first\n"
    assert not d.called
    bench.reply("echo", sid, "second", media=["http://m/x.jpg"])
    bench.record("echo", sid)
    bench.clock.advance(phone.POLL_SECONDS)
    assert result_of(d) == 0
    assert bench.out.getvalue() == ACCEPT_TWIML + "\n< first\n< second [media: http://m/x.jpg]\n"
    assert bench.err.getvalue() == ""


def test_wait_with_replies_but_no_record_ends_at_the_deadline_successfully() -> None:
    """Replies seen by the deadline are a success even if the exchange is not recorded yet."""
    bench = Bench()
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", "--wait", "1")
    bench.reply("echo", bench.queued()[0]["sid"], "hello")
    bench.clock.pump([phone.POLL_SECONDS] * 9)
    assert not d.called
    bench.clock.pump([phone.POLL_SECONDS] * 2)
    assert result_of(d) == 0
    assert bench.out.getvalue().endswith("< hello\n")


def test_wait_timeout_without_reply_is_an_error() -> None:
    """No reply within --wait seconds is one error line and exit 1."""
    bench = Bench()
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", "--wait", "2")
    bench.clock.pump([phone.POLL_SECONDS] * 19)
    assert not d.called
    bench.clock.pump([phone.POLL_SECONDS] * 2)
    assert result_of(d) == 1
    assert bench.err.getvalue() == "pyrowire: error: no reply to the message within 2 s\n"


def test_wait_reports_a_failed_handler() -> None:
    """A handler error recorded for the message ends the wait with its error line, exit 1."""
    bench = Bench()
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", "--wait")
    sid = bench.queued()[0]["sid"]
    bench.record("echo", sid, "errors", error="ZeroDivisionError: division by zero")
    bench.clock.advance(phone.POLL_SECONDS)
    assert result_of(d) == 1
    assert bench.err.getvalue() == (
        "pyrowire: error: the handler failed on the message: ZeroDivisionError: division by zero\n")


def test_wait_on_a_handled_message_without_reply() -> None:
    """A message handled without sending anything says so and exits 0."""
    bench = Bench()
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", "--wait")
    bench.record("echo", bench.queued()[0]["sid"])
    bench.clock.advance(phone.POLL_SECONDS)
    assert result_of(d) == 0
    assert bench.out.getvalue() == ACCEPT_TWIML + "\n(handled; no reply)\n"


def test_wait_polls_the_signed_replies_and_needs_no_redis() -> None:
    """send --wait on a signed topic reads the replies from the daemon with GETs signed over their full URL (the
    webhook's checks accept them), never from Redis: no --redis, and a daemon's store the command never sees."""
    bench = Bench()
    d = bench.start("send", SIGNED, "--from", NUMBER, "--body", "hi", "--wait", "--auth-token", TOKEN)
    sid = bench.queued("signed")[0]["sid"]
    bench.reply("signed", sid, "signed reply")
    bench.clock.advance(phone.POLL_SECONDS)
    bench.flush()
    bench.record("signed", sid)
    bench.clock.advance(phone.POLL_SECONDS)
    bench.flush()
    assert result_of(d) == 0
    assert bench.out.getvalue() == twiml.response("signed ok").decode() + "\n< signed reply\n"
    recorder = Recorder()
    stub: Any = StubTreq(recorder)
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", "--wait", "0", "--auth-token", TOKEN, http=stub)
    stub.flush()
    assert result_of(d) == 1
    [(uri, signature)] = recorder.polls
    assert uri == f"/queue/echo/replies?MessageSid={recorder.requests[0][0]['MessageSid']}"
    assert RequestValidator(TOKEN).validate(f"http://example.com{uri}", {}, signature)
    with pytest.raises(SystemExit):  # the Redis options are gone from send and chat
        cli._parser().parse_args(["send", OPEN, "--from", NUMBER, "--body", "hi", "--wait", "--redis", "x"])


def test_wait_goes_on_while_the_daemon_cannot_read_redis() -> None:
    """While the replies answer 503 (the daemon's Redis is away) the wait goes on, and ends when they come."""
    bench = Bench()
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", "--wait")
    sid = bench.queued()[0]["sid"]
    bench.store.down = True
    bench.clock.pump([phone.POLL_SECONDS] * 3)
    bench.flush()
    assert not d.called
    bench.store.down = False
    bench.reply("echo", sid, "back")
    bench.record("echo", sid)
    bench.clock.advance(phone.POLL_SECONDS)
    bench.flush()
    assert result_of(d) == 0
    assert bench.out.getvalue() == ACCEPT_TWIML + "\n< back\n"


def test_a_daemon_without_the_replies_endpoint_is_one_line() -> None:
    """A webhook that answers its replies with 404 (an older daemon) ends the wait with one line, exit 1."""
    bench = Bench()
    stub: Any = StubTreq(Plain(404, b"There is no such page."))
    webhook: Any = StubTreq(Recorder())

    class Split:
        def request(self, method: str, url: str, **kwargs: Any) -> Any:
            return (webhook if method == "POST" else stub).request(method, url, **kwargs)

    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "hi", "--wait", http=Split())
    webhook.flush()
    stub.flush()
    assert result_of(d) == 1
    [line] = bench.err.getvalue().splitlines()
    assert line.startswith(f"pyrowire: error: {OPEN}/replies?MessageSid=SM")
    assert line.endswith("answered 404 Not Found: There is no such page.")


def test_without_an_app_dead_defaults_to_the_embedded_redis_of_the_folder(tmp_path: Any) -> None:
    """With no app in the folder, dead uses ./.pyrowire/redis/redis.sock; $REDIS_URL and --redis beat it."""
    locate = deployment.locate
    folder = str(tmp_path)
    assert locate(None, None, None, None, {}, folder).address.path == f"{folder}/.pyrowire/redis/redis.sock"
    assert locate(None, None, None, None, {"REDIS_URL": "redis://h:6380/2"}, folder).address.port == 6380
    assert locate(None, None, "redis://o:6381/0", None, {"REDIS_URL": "redis://h:6380/2"}, folder).address.port == 6381
    assert locate(None, None, None, None, {}, folder).prefix == "pyrowire"


# an app whose topic does not keep conversations in order (read by --app in the test below)
UNORDERED = pyrowire.App({"TOPICS": {"broadcast": {"ordered": False}}, "PROFILES": {"dev": {}}})


def test_dead_requeue_of_an_unordered_topic_queues_every_letter(tmp_path: Any) -> None:
    """pyrowire dead requeue reads ordered: False from the app and queues every dead letter, several of one
    sender too, instead of parking them behind a conversation that no worker of the topic hands on."""
    clock = Clock()
    store = MemoryStore(clock)
    keys = store.keys("broadcast")
    for sid in ("SM1", "SM2"):
        letter = envelope.encode({"sid": sid, "number": NUMBER, "message": "hi"}, 1.0)
        result_of(Deferred.fromCoroutine(store.push_capped(keys.dead, letter, 10)))
    out, err = io.StringIO(), io.StringIO()
    effects = cli.Effects(store_factory=lambda address, prefix: store, probe=None, cwd=str(tmp_path))
    argv = ["dead", "requeue", "broadcast", "--app", f"{__name__}:UNORDERED", "--redis", "redis://127.0.0.1:1/0"]
    assert result_of(Deferred.fromCoroutine(cli.run(clock, argv, {}, out, err, effects))) == 0
    assert out.getvalue() == "requeued 2 dead letters of broadcast\n"
    store.start()  # the command stopped it
    assert result_of(Deferred.fromCoroutine(store.llen(keys.queue))) == 2
    assert result_of(Deferred.fromCoroutine(store.llen(keys.conversation(NUMBER)))) == 0


# --- chat --------------------------------------------------------------------------


def test_chat_sends_each_line_and_prints_answers_and_replies() -> None:
    """chat sends each input line in turn, printing prompts, the answer and that line's replies, until EOF."""
    bench = Bench()
    d = bench.start("chat", OPEN, "--from", NUMBER, lines=["hello", "", "again"])
    first = bench.queued()[0]["sid"]
    bench.reply("echo", first, "olleh")
    bench.record("echo", first)
    bench.clock.advance(phone.POLL_SECONDS)
    bench.flush()
    second = bench.queued()[0]["sid"]
    bench.reply("echo", second, "niaga")
    bench.record("echo", second)
    bench.clock.advance(phone.POLL_SECONDS)
    assert result_of(d) == 0
    assert [m["message"] for m in bench.handled] == ["hello", "again"]
    assert bench.out.getvalue() == f"> {ACCEPT}\n< olleh\n> > {ACCEPT}\n< niaga\n> \n"
    assert bench.err.getvalue() == ""


def test_chat_goes_on_after_an_error() -> None:
    """An error on one line is printed and chat reads the next line; EOF still exits 0."""
    bench = Bench()
    d = bench.start("chat", OPEN, "--from", NUMBER, "--wait", "1", http=FailingHTTP(ConnectionRefusedError()),
                    lines=["a", "b"])
    assert result_of(d) == 0
    assert bench.err.getvalue().splitlines() == [f"pyrowire: error: cannot connect to {OPEN}: connection refused"] * 2


def test_chat_echoes_piped_lines() -> None:
    """With echo (input that is not a terminal) each line read is shown after its prompt."""
    bench = Bench()
    recorder = Recorder(twiml.response(None))
    stub: Any = StubTreq(recorder)
    talker = phone.Phone(OPEN, NUMBER, http=stub, clock=bench.clock)
    d = Deferred.fromCoroutine(phone.chat(talker, phone.lines_from(["hi"]), bench.out, bench.err, wait=0, echo=True))
    stub.flush()
    assert result_of(d) == 0
    assert bench.out.getvalue() == "> hi\n(empty answer)\n> \n"
    assert bench.err.getvalue() == "pyrowire: no reply to it within 0 s\n"


def test_terminal_protocol_queues_lines_until_end_of_input() -> None:
    """The stdin protocol yields each line (CRLF or LF, a last unterminated one too), then None at EOF."""
    terminal = phone.Terminal()
    transport = StringTransport()
    terminal.makeConnection(transport)
    got: list[str | None] = []
    for _ in range(4):
        terminal.next_line().addCallback(got.append)
    terminal.dataReceived(b"one\r\ntw")
    terminal.dataReceived(b"o\nthree")
    assert got == ["one", "two"]
    terminal.readConnectionLost()
    assert got == ["one", "two", "three", None]
    terminal.write("< é\n")
    assert transport.value() == "< é\n".encode()
    terminal.connectionLost(None)
    assert terminal.closed.called


# --- init ----------------------------------------------------------------------------


def test_init_writes_the_app_and_says_what_next(tmp_path: Any) -> None:
    """init DIR writes the six files and prints how to run and text the app."""
    bench = Bench()
    target = tmp_path / "newapp"
    assert bench.run("init", str(target)) == 0
    assert sorted(p.name for p in target.iterdir()) == [
        ".gitignore", "Procfile", "app.py", "requirements.txt", "settings.py", "test_app.py"]
    lines = bench.out.getvalue().splitlines()
    assert lines[0] == f"wrote app.py, settings.py, Procfile, requirements.txt, test_app.py, .gitignore in {target}"
    assert "twistd -n pyrowire --app app" in lines[1]
    assert "pyrowire send http://localhost:62023/queue/hello --from +15551234567 --body hi --wait" in lines[2]


def test_init_refuses_to_overwrite_then_force_does(tmp_path: Any) -> None:
    """init refuses, in one line naming the files, when they exist; --force overwrites them."""
    (tmp_path / "app.py").write_text("mine\n")
    (tmp_path / "Procfile").write_text("mine\n")
    bench = Bench()
    assert bench.run("init", str(tmp_path)) == 1
    assert bench.err.getvalue() == (
        f"pyrowire: error: app.py, Procfile already in {tmp_path}; use --force to overwrite\n")
    assert (tmp_path / "app.py").read_text() == "mine\n"
    assert not (tmp_path / "settings.py").exists()
    assert bench.run("init", str(tmp_path), "--force") == 0
    assert "pyrowire.App(settings)" in (tmp_path / "app.py").read_text()


def test_wait_on_a_refused_message_says_so() -> None:
    """--wait on a message a validator refused says which validator, at once, and exits 0."""
    bench = Bench()
    d = bench.start("send", OPEN, "--from", NUMBER, "--body", "", "--wait", "2")
    bench.clock.pump([phone.POLL_SECONDS] * 2)
    assert result_of(d) == 0
    assert bench.out.getvalue().endswith("(refused by the length validator: nothing was queued)\n")


# --- help and version ------------------------------------------------------------------


def test_version_is_pyrowires(capsys: pytest.CaptureFixture[str]) -> None:
    """pyrowire --version prints the package's version and exits 0."""
    with pytest.raises(SystemExit) as e:
        cli._parser().parse_args(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"pyrowire {pyrowire.__version__}\n"


def test_help_says_the_daemon_runs_under_twistd(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """pyrowire --help names every command and says the daemon runs as twistd -n pyrowire."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "twistd -n pyrowire --app app" in text
    for command in ("init", "send", "chat", "dead"):
        assert f"    {command} " in text


def test_dead_help_describes_its_commands_and_arguments(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """pyrowire dead --help describes list and requeue, TOPIC, and the options that find the daemon's Redis."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["dead", "--help"])
    text = capsys.readouterr().out
    assert "list          print the topic's dead letters, oldest first" in text
    assert "requeue       move the topic's dead letters back to its queue" in text
    for argument in ("TOPIC", "--app MODULE[:ATTR]", "--profile NAME", "--redis URL", "--prefix P"):
        assert argument in text

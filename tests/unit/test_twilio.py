"""TwilioClient against the in-memory FakeTwilio resource, through StubTreq and a task.Clock."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from pyrowire.errors import ConfigurationError, TwilioError
from pyrowire.retry import RetryPolicy
from pyrowire.settings import TwilioConfig
from pyrowire.testing.fake_twilio import FakeTwilio
from pyrowire.twilio import TwilioClient, default_timeout
from tests.deferreds import result_of

SID = "AC" + "0" * 32
TOKEN = "s3cr3t-token-value-that-must-not-leak"
CREDS = TwilioConfig(
    account_sid=SID, auth_token=TOKEN, from_number="+15005550006", sandbox=False, api_base="https://api.test"
)


# one attempt per send: for the tests of how a single answer becomes a result or an error
ONCE = RetryPolicy(max_attempts=1)


def make_client(
    resource: Resource, clock: Clock | None = None, policy: RetryPolicy | None = None, **kwargs: Any
) -> tuple[TwilioClient, Any, Clock]:
    """A TwilioClient talking to ``resource`` in memory, the StubTreq under it, and its clock.

    Without ``policy`` it retries as in production, with a jitter of 1 so delays are exact.
    """
    clock = clock or Clock()
    stub: Any = StubTreq(resource)
    kwargs.setdefault("jitter", lambda: 1.0)
    return TwilioClient(clock, http=cast(HTTPClient, stub), policy=policy, **kwargs), stub, clock




def failure_of(d: Deferred[Any], kind: type[Exception] = TwilioError) -> Any:
    """The exception ``d`` failed with, checked to be a ``kind``."""
    with pytest.raises(kind) as info:
        result_of(d)
    return info.value


def test_send_returns_the_sid_and_the_fake_records_the_message() -> None:
    """A send answers Twilio's SID and posts To, From, Body, each MediaUrl and StatusCallback."""
    fake = FakeTwilio(auth_token=TOKEN)
    client, _, _ = make_client(fake)
    d = client.send(
        CREDS,
        to="+15551234567",
        body="hello",
        media_urls=["https://m.test/a.png", "https://m.test/b.png"],
        status_callback="https://app.test/status",
    )
    sid = result_of(d)
    assert sid.startswith("SM") and len(sid) == 34
    [message] = fake.messages
    assert (message.sid, message.account, message.to, message.from_) == (
        sid,
        SID,
        "+15551234567",
        "+15005550006",
    )
    assert message.body == "hello"
    assert message.media_urls == ["https://m.test/a.png", "https://m.test/b.png"]
    assert message.status_callback == "https://app.test/status"
    assert message.messaging_service_sid is None


def test_media_only_send_omits_the_body() -> None:
    """With body None no Body parameter is sent, and a MediaUrl alone is accepted."""
    fake = FakeTwilio()
    client, _, _ = make_client(fake)
    result_of(client.send(CREDS, to="+15551234567", media_urls=["https://m.test/a.png"]))
    assert fake.messages[0].body is None


def test_messaging_service_sid_is_used_instead_of_from() -> None:
    """When messaging_service_sid is set it is sent, and From is not."""
    fake = FakeTwilio()
    client, _, _ = make_client(fake)
    creds = TwilioConfig(SID, TOKEN, "+15005550006", "MG" + "1" * 32, False, "https://api.test")
    result_of(client.send(creds, to="+15551234567", body="hi"))
    assert fake.messages[0].messaging_service_sid == "MG" + "1" * 32
    assert fake.messages[0].from_ is None


def test_invalid_number_raises_twilio_error_with_code_and_status() -> None:
    """A 400 with code 21211 becomes a non-retryable TwilioError carrying code, status and message."""
    client, _, _ = make_client(FakeTwilio())
    error = failure_of(client.send(CREDS, to="not-a-number", body="hi"))
    assert (error.code, error.status) == (21211, 400)
    assert "Invalid 'To' Phone Number" in error.message
    assert error.more_info == "https://www.twilio.com/docs/errors/21211"
    assert not error.retryable


def test_server_error_is_retryable() -> None:
    """A 500 from Twilio becomes a TwilioError with status 500 that says it is retryable."""
    fake = FakeTwilio()
    fake.fail_next(status=500, count=1, code=20500, message="Internal Server Error")
    client, _, _ = make_client(fake, policy=ONCE)
    error = failure_of(client.send(CREDS, to="+15551234567", body="hi"))
    assert (error.status, error.code, error.message) == (500, 20500, "Internal Server Error")
    assert error.retryable
    assert result_of(client.send(CREDS, to="+15551234567", body="again")).startswith("SM")


def test_wrong_token_is_refused_with_401() -> None:
    """Credentials the fake does not know give TwilioError 20003 with HTTP 401."""
    client, _, _ = make_client(FakeTwilio(auth_token="another-token"))
    error = failure_of(client.send(CREDS, to="+15551234567", body="hi"))
    assert (error.code, error.status) == (20003, 401)


class EchoingProxy(Resource):
    """A misbehaving proxy answering 502 in plain text that echoes the Authorization header."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        """Answer 502 with the request's credentials in the body."""
        request.setResponseCode(502)
        auth = request.getHeader(b"authorization") or b""
        return b"Bad gateway for " + bytes(request.getPassword()) + b" / " + auth


def test_non_json_error_body_is_tolerated_and_scrubbed() -> None:
    """A non-JSON 502 becomes a retryable TwilioError whose text never holds the token."""
    client, _, _ = make_client(EchoingProxy(), policy=ONCE)
    error = failure_of(client.send(CREDS, to="+15551234567", body="hi"))
    assert (error.code, error.status, error.retryable) == (None, 502, True)
    assert "Bad gateway" in error.message


def test_auth_token_never_appears_in_errors_or_reprs() -> None:
    """Neither repr nor str of errors, client or credentials contains the auth token."""
    fake = FakeTwilio(auth_token="another-token")
    fake_client, _, _ = make_client(fake, policy=ONCE)
    proxy_client, _, _ = make_client(EchoingProxy(), policy=ONCE)
    errors = [
        failure_of(fake_client.send(CREDS, to="+15551234567", body="hi")),
        failure_of(proxy_client.send(CREDS, to="+15551234567", body="hi")),
        failure_of(proxy_client.send(CREDS, to="bad", body="hi")),
    ]
    texts = [repr(e) for e in errors] + [str(e) for e in errors]
    texts += [repr(fake_client), repr(proxy_client), repr(CREDS), repr(proxy_client._accounts)]
    for text in texts:
        assert TOKEN not in text


def test_no_answer_times_out_as_retryable_error() -> None:
    """A send Twilio never answers fails after the timeout with status None."""
    fake = FakeTwilio()
    fake.hang_next(1)
    client, _, clock = make_client(fake, policy=ONCE)
    d = client.send(CREDS, to="+15551234567", body="hi")
    assert not d.called
    clock.advance(15)
    error = failure_of(d)
    assert (error.code, error.status, error.retryable) == (None, None, True)
    assert "did not answer within 15 seconds" in error.message
    assert fake.release_hung() == 1


@implementer(IAgent)
class RefusingAgent:
    """An agent whose every connection is refused."""

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        """Fail at once as a refused TCP connection does."""
        return fail(ConnectionRefusedError("127.0.0.1", 1))


def test_connection_refused_is_a_plain_twilio_error() -> None:
    """A connection that cannot be made fails with a retryable TwilioError without status."""
    client = TwilioClient(Clock(), http=HTTPClient(RefusingAgent()), policy=ONCE)
    error = failure_of(client.send(CREDS, to="+15551234567", body="hi"))
    assert (error.code, error.status, error.retryable) == (None, None, True)
    assert error.message == "Could not connect to the Twilio API."


def test_missing_credentials_are_a_configuration_error() -> None:
    """Sending without an account SID and token fails with a ConfigurationError, not a request."""
    fake = FakeTwilio()
    client, _, _ = make_client(fake)
    error = failure_of(client.send(TwilioConfig(), to="+15551234567", body="hi"), ConfigurationError)
    assert error.option == "twilio"
    assert fake.messages == []


def test_close_fires_for_an_own_pool_and_an_injected_client() -> None:
    """close() fires both when the client built its pool and when the HTTP client was injected."""
    from twisted.internet.testing import MemoryReactorClock

    own = TwilioClient(MemoryReactorClock())
    injected, _, _ = make_client(FakeTwilio())
    assert result_of(own.close()) is None
    assert result_of(injected.close()) is None


def test_fake_control_endpoints() -> None:
    """The fake lists and clears messages, queues failures with Retry-After, and counts hangs over HTTP."""
    fake = FakeTwilio()
    client, stub, _ = make_client(fake, policy=ONCE)
    result_of(client.send(CREDS, to="+15551234567", body="one"))
    listed = result_of(stub.get("https://api.test/_fake/messages"))
    records = json.loads(result_of(listed.content()))
    assert [(r["to"], r["from"], r["body"]) for r in records] == [("+15551234567", "+15005550006", "one")]
    cleared = result_of(stub.delete("https://api.test/_fake/messages"))
    assert cleared.code == 200 and fake.messages == []
    spec = {"status": 429, "count": 2, "code": 20429, "message": "Too Many Requests", "retry_after": 3}
    assert result_of(stub.post("https://api.test/_fake/fail", json=spec)).code == 200
    url = f"https://api.test/2010-04-01/Accounts/{SID}/Messages.json"
    for _ in range(2):
        answer = result_of(stub.post(url, data={"To": "+15551234567", "From": "+1500", "Body": "x"}))
        assert answer.code == 429
        assert answer.headers.getRawHeaders(b"retry-after") == [b"3"]
    assert result_of(client.send(CREDS, to="+15551234567", body="two")).startswith("SM")
    assert result_of(stub.post("https://api.test/_fake/hang", json={"count": 1})).code == 200
    d = client.send(CREDS, to="+15551234567", body="three")
    assert not d.called
    released = result_of(stub.delete("https://api.test/_fake/hang"))
    assert json.loads(result_of(released.content())) == {"released": 1}
    stub.flush()
    assert failure_of(d).status == 503


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": "+15005550006", "Body": "x"}, 21604),
        ({"To": "+15551234567", "Body": "x"}, 21603),
        ({"To": "+15551234567", "From": "+15005550006"}, 21602),
        ({"To": "+15551234567", "From": "+15005550006", "Body": "x" * 1601}, 21617),
    ],
)
def test_fake_validates_parameters(form: dict[str, str], code: int) -> None:
    """The fake refuses a send missing To, From or Body (or too long) with Twilio's code and 400."""
    stub: Any = StubTreq(FakeTwilio())
    answer = result_of(stub.post(f"https://api.test/2010-04-01/Accounts/{SID}/Messages.json", data=form))
    body = json.loads(result_of(answer.content()))
    assert (answer.code, body["code"], body["status"]) == (400, code, 400)


# --- retries -------------------------------------------------------------------------------


class Counting(Resource):
    """Passes every request to ``inner`` and counts the sends (POSTs to Messages.json)."""

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner
        self.sends = 0

    def render(self, request: Request) -> Any:
        """Count a send, then let the inner resource answer."""
        if request.method == b"POST" and request.path.endswith(b"/Messages.json"):
            self.sends += 1
        return self.inner.render(request)


def counted(fake: FakeTwilio, **kwargs: Any) -> tuple[TwilioClient, Counting, Clock]:
    """A client over ``fake`` behind a send counter, and the clock it waits on."""
    counter = Counting(fake)
    client, _, clock = make_client(counter, **kwargs)
    return client, counter, clock


def test_two_server_errors_then_success_after_the_backoff() -> None:
    """Two 500s are retried after 0.5 s and 1 s of clock time, and the third request's SID is returned."""
    fake = FakeTwilio()
    fake.fail_next(status=500, count=2, code=20500, message="Internal Server Error")
    client, counter, clock = counted(fake)
    d = client.send(CREDS, to="+15551234567", body="hi")
    assert (d.called, counter.sends) == (False, 1)
    clock.advance(0.49)
    assert counter.sends == 1
    clock.advance(0.01)
    assert (d.called, counter.sends) == (False, 2)
    clock.advance(0.99)
    assert counter.sends == 2
    clock.advance(0.01)
    sid = result_of(d)
    assert counter.sends == 3
    assert [m.sid for m in fake.messages] == [sid]
    assert clock.getDelayedCalls() == []


def test_rate_limit_waits_for_retry_after() -> None:
    """A 429 with Retry-After: 1 is not retried before 1 s of clock time, though the backoff is 0.5 s."""
    fake = FakeTwilio()
    fake.fail_next(status=429, count=1, code=20429, message="Too Many Requests", retry_after=1)
    client, counter, clock = counted(fake)
    d = client.send(CREDS, to="+15551234567", body="hi")
    clock.advance(0.999)
    assert (d.called, counter.sends) == (False, 1)
    clock.advance(0.001)
    assert result_of(d).startswith("SM")
    assert counter.sends == 2


def test_hung_request_times_out_then_the_retry_succeeds() -> None:
    """A request Twilio never answers is given up after the timeout, and the retry 0.5 s later succeeds."""
    fake = FakeTwilio()
    fake.hang_next(1)
    client, counter, clock = counted(fake, timeout=5)
    d = client.send(CREDS, to="+15551234567", body="hi")
    clock.advance(4.9)
    assert (d.called, counter.sends) == (False, 1)
    clock.advance(0.1)
    assert (d.called, counter.sends) == (False, 1)
    clock.advance(0.5)
    assert result_of(d).startswith("SM")
    assert counter.sends == 2
    assert len(fake.messages) == 1


def test_invalid_number_is_not_retried() -> None:
    """A 400 with code 21211 is sent exactly once and fails with Twilio's code, message, more_info and status."""
    fake = FakeTwilio()
    fake.fail_next(status=400, count=5, code=21211, message="Invalid 'To' Phone Number: +1555")
    client, counter, clock = counted(fake)
    error = failure_of(client.send(CREDS, to="+15551234567", body="hi"))
    assert (error.code, error.status, error.message) == (21211, 400, "Invalid 'To' Phone Number: +1555")
    assert error.more_info == "https://www.twilio.com/docs/errors/21211"
    assert counter.sends == 1
    assert clock.getDelayedCalls() == []


def test_exhausted_retries_raise_the_last_error() -> None:
    """When every attempt fails the send fails with the error of the last one, after max_attempts requests."""
    fake = FakeTwilio()
    fake.fail_next(status=500, count=2, code=20500, message="first ones")
    fake.fail_next(status=503, count=1, code=20503, message="the last one")
    client, counter, clock = counted(fake, policy=RetryPolicy(max_attempts=3))
    d = client.send(CREDS, to="+15551234567", body="hi")
    clock.pump([0.5, 1.0])
    error = failure_of(d)
    assert (error.status, error.code, error.message) == (503, 20503, "the last one")
    assert counter.sends == 3
    assert fake.messages == []


def test_deadline_stops_retrying_early() -> None:
    """A retry that would start after the policy's deadline is not made; the last error is raised."""
    fake = FakeTwilio()
    fake.fail_next(status=500, count=5)
    client, counter, clock = counted(fake, policy=RetryPolicy(deadline=1.0))
    d = client.send(CREDS, to="+15551234567", body="hi")
    clock.advance(0.5)
    assert failure_of(d).status == 500
    assert counter.sends == 2
    assert clock.getDelayedCalls() == []


def test_observer_sees_retries_and_the_outcome() -> None:
    """The observer is told "retry" with each retried error, then "sent", or "failed" with a permanent error."""
    seen: list[tuple[str, Any]] = []
    fake = FakeTwilio()
    fake.fail_next(status=500, count=1)
    client, _, clock = counted(fake, observer=lambda outcome, error: seen.append((outcome, error)))
    d = client.send(CREDS, to="+15551234567", body="hi")
    clock.advance(0.5)
    result_of(d)
    failure_of(client.send(CREDS, to="bad", body="hi"))
    assert [(outcome, error and error.status) for outcome, error in seen] == [
        ("retry", 500),
        ("sent", None),
        ("failed", 400),
    ]


def test_a_failing_observer_does_not_break_the_send() -> None:
    """An exception raised by the observer is logged and the send still succeeds."""
    events: list[dict[str, Any]] = []

    def broken(outcome: str, error: TwilioError | None) -> None:
        raise RuntimeError("observer bug")

    client, _, _ = counted(FakeTwilio(), observer=broken)
    client.log = Logger(observer=events.append)
    assert result_of(client.send(CREDS, to="+15551234567", body="hi")).startswith("SM")
    assert [e["log_failure"].check(RuntimeError) for e in events if "log_failure" in e] == [RuntimeError]


def test_retries_are_logged_without_secrets() -> None:
    """Each retry logs its status, number and delay, and no event holds the auth token."""
    events: list[dict[str, Any]] = []
    fake = FakeTwilio()
    fake.fail_next(status=502, count=1, message=f"proxy saw {TOKEN}")
    client, _, clock = counted(fake)
    client.log = Logger(observer=events.append)
    d = client.send(CREDS, to="+15551234567", body="hi")
    clock.advance(0.5)
    result_of(d)
    texts = [formatEvent(e) for e in events if e["log_level"] is LogLevel.warn]
    assert texts == ["Twilio send failed (502), retry 1 in 0.5s"]
    for event in events:
        assert TOKEN not in repr(event)


def test_cancelling_while_waiting_stops_cleanly() -> None:
    """Cancelling a send between attempts fails it with CancelledError and no further request is made."""
    seen: list[str] = []
    fake = FakeTwilio()
    fake.fail_next(status=500, count=1)
    client, counter, clock = counted(fake, observer=lambda outcome, _: seen.append(outcome))
    d = client.send(CREDS, to="+15551234567", body="hi")
    d.cancel()
    failure_of(d, CancelledError)
    assert clock.getDelayedCalls() == []
    clock.advance(60)
    assert (counter.sends, seen, fake.messages) == (1, ["retry"], [])


def test_cancelling_an_attempt_in_flight_is_not_a_timeout() -> None:
    """Cancelling a send whose request is still unanswered fails it with CancelledError and no retry."""
    fake = FakeTwilio()
    fake.hang_next(1)
    client, counter, clock = counted(fake)
    d = client.send(CREDS, to="+15551234567", body="hi")
    clock.advance(1)
    d.cancel()
    failure_of(d, CancelledError)
    clock.advance(60)
    assert counter.sends == 1
    assert clock.getDelayedCalls() == []


@implementer(IAgent)
class NeverConnectingAgent:
    """An agent whose connections never complete; cancelling one fails as Agent's do."""

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        """A Deferred that only a cancel fires, with ConnectingCancelledError."""

        def cancel(d: Deferred[Any]) -> None:
            d.errback(ConnectingCancelledError(None))

        return Deferred(cancel)


def test_connect_timeout_is_a_retryable_error() -> None:
    """A connection that never completes times out as a TwilioError without status, not a raw exception."""
    clock = Clock()
    client = TwilioClient(clock, http=HTTPClient(NeverConnectingAgent()), timeout=3, policy=ONCE)
    d = client.send(CREDS, to="+15551234567", body="hi")
    clock.advance(3)
    error = failure_of(d)
    assert (error.status, error.retryable, error.message) == (None, True, "Twilio did not answer within 3 seconds.")
    cancelled = client.send(CREDS, to="+15551234567", body="hi")
    cancelled.cancel()
    failure_of(cancelled, CancelledError)


def test_default_timeout_reads_one_environment_variable() -> None:
    """PYROWIRE_TWILIO_TIMEOUT sets the per-attempt timeout; unset it is 15 s; a bad value is a ConfigurationError."""
    assert default_timeout({}) == 15.0
    assert default_timeout({"PYROWIRE_TWILIO_TIMEOUT": " 1.5 "}) == 1.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ConfigurationError) as info:
            default_timeout({"PYROWIRE_TWILIO_TIMEOUT": bad})
        assert info.value.option == "PYROWIRE_TWILIO_TIMEOUT"


def test_fake_posts_signed_status_callbacks_in_the_planned_order() -> None:
    """The fake calls a send's StatusCallback with queued, sent, delivered (or a plan), signed with the send's token."""
    from twilio.request_validator import RequestValidator

    posted: list[tuple[str, dict[str, str], dict[str, str]]] = []
    clock = Clock()
    fake = FakeTwilio(auth_token=TOKEN, post=lambda url, form, headers: posted.append((url, form, headers)),
                      clock=clock)
    client, _, _ = make_client(fake, clock=clock)
    result_of(client.send(CREDS, to="+15551234567", body="one", status_callback="https://app.test/status/echo"))
    fake.plan_next(["delivered", "sent", "failed"], error_code=21610)
    result_of(client.send(CREDS, to="+15551234567", body="two", status_callback="https://app.test/status/echo"))
    result_of(client.send(CREDS, to="+15551234567", body="three"))  # no StatusCallback: no callbacks
    clock.advance(1)
    first, second = fake.messages[0].sid, fake.messages[1].sid
    def of(sid: str) -> list[tuple[str, str | None]]:
        return [(form["MessageStatus"], form.get("ErrorCode")) for _, form, _ in posted if form["MessageSid"] == sid]

    assert of(first) == [("queued", None), ("sent", None), ("delivered", None)]
    assert of(second) == [("delivered", None), ("sent", None), ("failed", "21610")]
    assert len(posted) == 6
    validator = RequestValidator(TOKEN)
    assert all(validator.validate(url, form, headers["X-Twilio-Signature"]) for url, form, headers in posted)

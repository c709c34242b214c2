"""The real Webhook resource, driven in memory with StubTreq over a MemoryStore and a task.Clock."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

import pytest
from treq.client import HTTPClient
from treq.testing import StubTreq
from twilio.request_validator import RequestValidator
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater

import pyrowire
from pyrowire import twiml
from pyrowire.memory_store import MemoryStore
from pyrowire.outbound import Sender
from pyrowire.runtime import Runtime
from pyrowire.testing.fake_twilio import FakeTwilio
from pyrowire.twilio import TwilioClient
from pyrowire.webhook import Webhook
from tests.deferreds import result_of

ACCOUNT = "AC" + "1" * 32
TOKEN = "webhook-test-auth-token"
ACCEPT = "Great, we'll get right back to you."
ERROR = "It seems like an error has occurred...please try again later."
FORM = {"Content-Type": ["application/x-www-form-urlencoded"]}


def topics() -> dict[str, Any]:
    """A TOPICS dict in the original shape: an open topic and one that validates signatures."""
    return {
        "echo": {
            "accept_response": ACCEPT,
            "error_response": ERROR,
            "validators": {
                "length": "Your message was empty or too long.",
                "profanity": "No profanity, please.",
            },
            "max_message_length": 20,
        },
        "signed": {
            "accept_response": "ok",
            "twilio": {"account_sid": ACCOUNT, "auth_token": TOKEN, "from_number": "+15005550006"},
        },
        "quiet": {"accept_response": ""},
    }


PROFILES = {"dev": {"debug": True, "host": "localhost", "port": 62023}}


@dataclass
class Response:
    code: int
    headers: Mapping[bytes, list[bytes]]
    body: bytes

    @property
    def content_type(self) -> bytes:
        return self.headers.get(b"content-type", [b""])[0]


class Harness:
    """An App, a MemoryStore, a Clock and the real Webhook resource behind a StubTreq."""

    def __init__(self, topics_: dict[str, Any] | None = None, public_url: str | None = None) -> None:
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.app = pyrowire.App({"TOPICS": topics_ or topics(), "PROFILES": PROFILES})
        self.webhook = Webhook(self.app, self.store, self.clock, public_url)
        self.stub: Any = StubTreq(self.webhook.resource())

    def send(
        self, method: str, url: str, data: Any = None, headers: dict[str, Any] | None = None
    ) -> Deferred[Any]:
        """Start a request; the Deferred fires with a Response once the stub is flushed."""

        async def go() -> Response:
            all_headers = dict(FORM) if data is not None else {}
            all_headers.update(headers or {})
            response = await self.stub.request(method, url, data=data, headers=all_headers)
            body: bytes = await response.content()
            raw = {k.lower(): v for k, v in response.headers.getAllRawHeaders()}
            return Response(response.code, raw, body)

        return Deferred.fromCoroutine(go())

    def request(
        self, method: str, url: str, data: Any = None, headers: dict[str, Any] | None = None
    ) -> Response:
        """Make a request and answer its Response, which must be complete without time passing."""
        d = self.send(method, url, data, headers)
        self.stub.flush()
        return result_of(d)

    def post(
        self,
        topic: str,
        params: Mapping[str, str],
        headers: dict[str, Any] | None = None,
        host: str = "http://example.com",
    ) -> Response:
        return self.request("POST", f"{host}/queue/{topic}", urlencode(params).encode(), headers)

    def queued(self, topic: str = "echo") -> list[dict[str, Any]]:
        """The JSON envelopes queued for ``topic``, oldest first."""
        items = result_of(Deferred.fromCoroutine(self.store.lrange(self.store.keys(topic).queue)))
        return [json.loads(i) for i in reversed(items)]




def sms(sid: str = "SM" + "a" * 32, body: str = "hello", **extra: str) -> dict[str, str]:
    """Twilio's webhook parameters for an inbound SMS."""
    params = {
        "MessageSid": sid,
        "From": "+15551234567",
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
        "FromCity": "PORTLAND",
        "FromState": "OR",
        "FromZip": "97209",
        "FromCountry": "US",
    }
    params.update(extra)
    return params


def signed_headers(url: str, params: Mapping[str, str], token: str = TOKEN) -> dict[str, list[str]]:
    """The X-Twilio-Signature header Twilio's own library computes for a POST to ``url``."""
    return {"X-Twilio-Signature": [RequestValidator(token).compute_signature(url, dict(params))]}


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- accepted ------------------------------------------------------------------


def test_accepted_message_answers_accept_twiml_and_is_queued(h: Harness) -> None:
    """An accepted message answers 200 text/xml with the accept TwiML and queues the message JSON."""
    h.clock.advance(1234)
    r = h.post("echo", sms(MediaUrl0="https://m/1", MediaContentType0="image/jpeg", NumMedia="1"))
    assert r.code == 200
    assert r.content_type.startswith(b"text/xml")
    assert r.body == twiml.response(ACCEPT)
    assert r.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?><Response><Message>Great')
    [envelope] = h.queued()
    assert envelope["received_at"] == 1234
    assert envelope["message"] == {
        "message": "hello",
        "number": "+15551234567",
        "sid": "SM" + "a" * 32,
        "topic": "echo",
        "to": "+15005550006",
        "from_city": "PORTLAND",
        "from_state": "OR",
        "from_country": "US",
        "from_zip": "97209",
        "media": {"count": 1, "media": {"https://m/1": "image/jpeg"}},
        "reply": None,
    }


def test_accepted_by_get_is_queued_too(h: Harness) -> None:
    """A GET with the parameters in the query string is accepted like a POST."""
    r = h.request("GET", "http://example.com/queue/echo?" + urlencode(sms()))
    assert (r.code, r.body) == (200, twiml.response(ACCEPT))
    assert [e["message"]["message"] for e in h.queued()] == ["hello"]


def test_empty_accept_response_answers_empty_twiml(h: Harness) -> None:
    """A topic whose accept_response is empty answers ``<Response/>``."""
    r = h.post("quiet", sms())
    assert r.body == b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert len(h.queued("quiet")) == 1


def test_missing_optional_fields_become_none_and_sms_has_no_media(h: Harness) -> None:
    """Absent From* fields are None and an SMS carries ``{"count": 0, "media": {}}``."""
    h.post("echo", {"MessageSid": "SM1", "From": "+1555", "Body": "hi"})
    message = h.queued()[0]["message"]
    assert message["from_city"] is None and message["to"] is None
    assert message["media"] == {"count": 0, "media": {}}


# --- validators --------------------------------------------------------------


def test_invalid_message_answers_the_validator_twiml_and_queues_nothing(h: Harness) -> None:
    """A validator saying invalid answers its message as TwiML; nothing is queued or sent."""
    r = h.post("echo", sms(body="x" * 21))
    assert (r.code, r.body) == (200, twiml.response("Your message was empty or too long."))
    assert r.content_type.startswith(b"text/xml")
    assert h.queued() == []


def test_first_failing_validator_in_order_answers(h: Harness) -> None:
    """Validators run in the topic's order; the first that says invalid gives the answer."""
    r = h.post("echo", sms(body="fuck"))
    assert r.body == twiml.response("No profanity, please.")


def test_empty_body_is_present_and_left_to_the_length_validator(h: Harness) -> None:
    """An empty Body is not a 400: the length validator refuses it, and a topic without one queues it."""
    assert h.post("echo", sms(body="")).body == twiml.response("Your message was empty or too long.")
    r = h.post("quiet", sms(body=""))
    assert r.code == 200
    assert h.queued("quiet")[0]["message"]["message"] == ""


def test_custom_validator_replaces_the_builtin_of_the_same_name(h: Harness) -> None:
    """``@app.validator(name="profanity")`` replaces the built-in profanity check."""

    @h.app.validator(name="profanity")
    def no_bananas(message: dict[str, Any]) -> bool:
        return "banana" in message["message"]

    assert h.post("echo", sms(sid="SM1", body="fuck")).body == twiml.response(ACCEPT)
    assert h.post("echo", sms(sid="SM2", body="banana")).body == twiml.response("No profanity, please.")
    assert [e["message"]["sid"] for e in h.queued()] == ["SM1"]


def test_async_custom_validator(h: Harness) -> None:
    """An ``async def`` validator is awaited, and its True refuses the message."""

    @h.app.validator(name="profanity")
    async def no_bananas(message: dict[str, Any]) -> bool:
        await succeed(None)
        return "banana" in message["message"]

    assert h.post("echo", sms(sid="SM1", body="banana")).body == twiml.response("No profanity, please.")
    assert h.post("echo", sms(sid="SM2", body="apple")).body == twiml.response(ACCEPT)


def test_deferred_custom_validator_answers_when_it_fires(h: Harness) -> None:
    """A validator returning a Deferred holds the answer, without blocking, until it fires on the clock."""

    @h.app.validator(name="profanity")
    def slow(message: dict[str, Any]) -> Deferred[bool]:
        return deferLater(h.clock, 2, lambda: "banana" in message["message"])

    d = h.send("POST", "http://example.com/queue/echo", urlencode(sms(body="banana")).encode())
    h.stub.flush()
    assert not d.called
    h.clock.advance(2)
    h.stub.flush()
    assert result_of(d).body == twiml.response("No profanity, please.")
    assert h.queued() == []


# --- duplicates ----------------------------------------------------------------


def test_duplicate_message_sid_answers_the_same_and_queues_once(h: Harness) -> None:
    """A retried MessageSid answers as the first time did and is queued only once."""
    first = h.post("echo", sms())
    again = h.post("echo", sms())
    assert again.code == first.code == 200
    assert again.body == first.body
    assert len(h.queued()) == 1


def test_duplicate_of_an_invalid_message_answers_the_validator_again(h: Harness) -> None:
    """A retry of a refused MessageSid gets the same validator TwiML, even if its body changed."""
    first = h.post("echo", sms(body="x" * 21))
    again = h.post("echo", sms(body="short"))
    assert again.body == first.body == twiml.response("Your message was empty or too long.")
    assert h.queued() == []


# --- Redis down ------------------------------------------------------------------


def test_store_down_answers_the_error_response(h: Harness) -> None:
    """When Redis is unreachable the webhook answers 200 with the topic's error_response TwiML."""
    h.store.down = True
    r = h.post("echo", sms())
    assert (r.code, r.body) == (200, twiml.response(ERROR))
    assert r.content_type.startswith(b"text/xml")
    h.store.down = False
    assert h.post("echo", sms()).body == twiml.response(ACCEPT)
    assert len(h.queued()) == 1


# --- refusals ----------------------------------------------------------------------


def test_unknown_topic_is_404(h: Harness) -> None:
    """A topic that is not configured answers 404."""
    assert h.post("nope", sms()).code == 404


@pytest.mark.parametrize("field", ["MessageSid", "From", "Body"])
def test_missing_required_field_is_400_naming_it(h: Harness, field: str) -> None:
    """An absent MessageSid, From or Body answers 400 with a sentence naming the field."""
    params = sms()
    del params[field]
    r = h.post("echo", params)
    assert r.code == 400
    assert field.encode() in r.body
    assert r.body.rstrip().endswith(b".")
    assert h.queued() == []


def test_body_over_64_kib_is_413(h: Harness) -> None:
    """A request body over 64 KiB answers 413 and queues nothing."""
    r = h.post("echo", sms(body="x" * (64 * 1024)))
    assert r.code == 413
    assert h.queued() == []


def test_other_methods_are_405(h: Harness) -> None:
    """PUT (or any method other than GET/POST) answers 405."""
    r = h.request("PUT", "http://example.com/queue/echo", urlencode(sms()).encode())
    assert r.code == 405


# --- signatures ------------------------------------------------------------------------


def test_signed_post_is_accepted(h: Harness) -> None:
    """A POST signed as Twilio signs it (official RequestValidator) is accepted."""
    url = "http://example.com/queue/signed"
    r = h.post("signed", sms(), signed_headers(url, sms()))
    assert (r.code, r.body) == (200, twiml.response("ok"))
    assert len(h.queued("signed")) == 1


def test_signed_get_is_accepted(h: Harness) -> None:
    """A GET is signed over the full URL with its query string and no parameters."""
    url = "http://example.com/queue/signed?" + urlencode(sms())
    r = h.request("GET", url, headers=signed_headers(url, {}))
    assert r.code == 200
    assert len(h.queued("signed")) == 1


def test_signature_with_default_port_is_accepted(h: Harness) -> None:
    """As Twilio's validator does, a signature over the URL with its default port :80 is accepted."""
    r = h.post("signed", sms(), signed_headers("http://example.com:80/queue/signed", sms()))
    assert r.code == 200


@pytest.mark.parametrize("headers", [None, {"X-Twilio-Signature": ["bm90IHRoZSBzaWduYXR1cmU="]}])
def test_bad_or_missing_signature_is_403(h: Harness, headers: dict[str, Any] | None) -> None:
    """A missing or wrong X-Twilio-Signature on a topic that validates signatures answers 403."""
    r = h.post("signed", sms(), headers)
    assert r.code == 403
    assert h.queued("signed") == []


def test_signature_with_another_token_is_403(h: Harness) -> None:
    """A signature made with a different auth token is refused."""
    url = "http://example.com/queue/signed"
    assert h.post("signed", sms(), signed_headers(url, sms(), token="other")).code == 403


def test_signature_over_tampered_parameters_is_403(h: Harness) -> None:
    """A signature computed over other parameters than those sent is refused."""
    url = "http://example.com/queue/signed"
    assert h.post("signed", sms(body="changed"), signed_headers(url, sms())).code == 403


def test_topic_without_token_does_not_check_signatures(h: Harness) -> None:
    """A topic without an auth token accepts unsigned requests (validate_signature defaults off)."""
    assert h.post("echo", sms()).code == 200


def test_public_url_is_what_the_signature_covers() -> None:
    """Behind a proxy, the signature is checked against public_url plus the request's path."""
    h = Harness(public_url="https://sms.example.com")
    public = "https://sms.example.com/queue/signed"
    r = h.post("signed", sms(), signed_headers(public, sms()), host="http://10.0.0.5:8080")
    assert r.code == 200
    internal = "http://10.0.0.5:8080/queue/signed"
    assert (
        h.post("signed", sms("SM2"), signed_headers(internal, sms("SM2")), host="http://10.0.0.5:8080").code
        == 403
    )


def test_forwarded_proto_sets_the_scheme(h: Harness) -> None:
    """``X-Forwarded-Proto: https`` makes the signed URL https, as behind Heroku's router."""
    https = "https://example.com/queue/signed"
    headers = {**signed_headers(https, sms()), "X-Forwarded-Proto": ["https"]}
    assert h.post("signed", sms(), headers).code == 200
    http_headers = {
        **signed_headers("http://example.com/queue/signed", sms("SM2")),
        "X-Forwarded-Proto": ["https"],
    }
    assert h.post("signed", sms("SM2"), http_headers).code == 403


# --- send_on_accept ----------------------------------------------------------------------


def send_on_accept_topics(twilio: dict[str, Any] | None) -> dict[str, Any]:
    topic: dict[str, Any] = {"send_on_accept": True, "accept_response": "Got it."}
    if twilio is not None:
        topic["twilio"] = twilio
        topic["validate_signature"] = False
    return {"echo": topic}


def test_send_on_accept_in_sandbox_puts_the_accept_in_the_outbox() -> None:
    """With send_on_accept and no credentials the accept response also goes to the sandbox outbox."""
    h = Harness(send_on_accept_topics(None))
    twilio_stub: Any = StubTreq(FakeTwilio())
    client = TwilioClient(h.clock, http=cast(HTTPClient, twilio_stub))
    h.app.runtime = Runtime(h.store, Sender(client, h.store, h.clock), h.clock)
    r = h.post("echo", sms())
    assert r.body == twiml.response("Got it.")
    outbox = result_of(Deferred.fromCoroutine(h.store.lrange(h.store.keys("echo").outbox)))
    [record] = [json.loads(o) for o in outbox]
    assert (record["to"], record["body"], record["in_reply_to"]) == (
        "+15551234567",
        "Got it.",
        "SM" + "a" * 32,
    )
    assert record["sid"].startswith("SB")


def test_send_on_accept_sends_through_the_rest_api() -> None:
    """With send_on_accept and credentials the accept response is POSTed to (fake) Twilio as well."""
    h = Harness(
        send_on_accept_topics(
            {
                "account_sid": ACCOUNT,
                "auth_token": TOKEN,
                "from_number": "+15005550006",
                "api_base": "https://api.test",
            }
        )
    )
    fake = FakeTwilio(auth_token=TOKEN, now=h.clock.seconds)
    twilio_stub: Any = StubTreq(fake)
    client = TwilioClient(h.clock, http=cast(HTTPClient, twilio_stub))
    h.app.runtime = Runtime(h.store, Sender(client, h.store, h.clock), h.clock)
    r = h.post("echo", sms())
    twilio_stub.flush()
    assert r.body == twiml.response("Got it.")
    [sent] = fake.messages
    assert (sent.to, sent.from_, sent.body) == ("+15551234567", "+15005550006", "Got it.")
    assert len(h.queued()) == 1


def test_send_on_accept_not_sent_for_a_duplicate() -> None:
    """A retried MessageSid does not send the accept response through the REST API again."""
    h = Harness(send_on_accept_topics(None))
    client = TwilioClient(h.clock, http=cast(HTTPClient, StubTreq(FakeTwilio())))
    h.app.runtime = Runtime(h.store, Sender(client, h.store, h.clock), h.clock)
    h.post("echo", sms())
    h.post("echo", sms())
    assert result_of(Deferred.fromCoroutine(h.store.llen(h.store.keys("echo").outbox))) == 1


# --- health ------------------------------------------------------------------------------------


def test_health_is_200_when_the_store_answers(h: Harness) -> None:
    """GET /health answers 200 JSON while Redis answers."""
    r = h.request("GET", "http://example.com/health")
    assert r.code == 200
    assert r.content_type.startswith(b"application/json")
    assert json.loads(r.body)["status"] == "ok"


def test_health_is_503_when_the_store_is_down(h: Harness) -> None:
    """GET /health answers 503 JSON when Redis does not answer."""
    h.store.down = True
    r = h.request("GET", "http://example.com/health")
    assert r.code == 503
    assert json.loads(r.body)["status"] != "ok"

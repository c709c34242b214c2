"""``GET /queue/<topic>/replies`` through the production root, over a MemoryStore and a task.Clock."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator
from twisted.internet.defer import Deferred

from pyrowire import twiml
from pyrowire.store import Store
from tests.deferreds import result_of
from tests.unit.test_webhook import TOKEN, Harness, sms

SID = "SM" + "a" * 32
W = "host:1:abcd"


def now(coro: Any) -> Any:
    return result_of(Deferred.fromCoroutine(coro))


def replies_url(topic: str = "echo", sid: str = SID, host: str = "http://example.com") -> str:
    return f"{host}/queue/{topic}/replies?" + urlencode({"MessageSid": sid})


def get(h: Harness, url: str, headers: dict[str, Any] | None = None) -> tuple[int, Any]:
    """GET ``url``: the status and the JSON answer (or the plain sentence)."""
    r = h.request("GET", url, headers=headers)
    if r.content_type == b"application/json":
        assert r.headers[b"cache-control"] == [b"no-store"]
        return r.code, json.loads(r.body)
    assert r.content_type == b"text/plain; charset=utf-8"
    return r.code, r.body.decode()


def finish(store: Store, topic: str, sid: str, replies: dict[int, str] | None = None, dead: bool = False) -> None:
    """Take the topic's next message and finish it as a worker would."""
    taken = now(store.take(store.popper(), topic, W))
    assert taken is not None and json.loads(taken.payload)["message"]["sid"] == sid
    record = json.dumps({"message": {"sid": sid}, "error": "KeyError: 'x'"})
    now(store.finish(topic, W, taken.payload, sid, record, "errors" if dead else "complete", 10, dead,
                     replies=replies))


def reply(sid: str, body: str, media: tuple[str, ...] = ()) -> str:
    return json.dumps({"sid": sid, "to": "+15551234567", "body": body, "media": list(media)})


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_replies_are_answered_as_they_are_sent_and_handled_once_the_message_is_recorded(h: Harness) -> None:
    """Before its handler runs a message is not handled and has no replies; its replies then appear in order, each
    with its delivery status, and it is handled once recorded."""
    assert h.post("echo", sms(SID)).code == 200
    assert get(h, replies_url()) == (200, {"handled": False, "replies": []})
    now(h.store.record_sent("echo", SID, 0, "SBone", reply("SBone", "olleh")))
    now(h.store.record_status("echo", "SBone", "delivered", 3, "", "{}"))
    assert get(h, replies_url()) == (200, {"handled": False, "replies": [
        {"sid": "SBone", "to": "+15551234567", "body": "olleh", "media": [], "status": "delivered"}]})
    finish(h.store, "echo", SID, {1: reply("SMtwo", "", ("https://m.example/a.png",))})
    assert get(h, replies_url()) == (200, {"handled": True, "replies": [
        {"sid": "SBone", "to": "+15551234567", "body": "olleh", "media": [], "status": "delivered"},
        {"sid": "SMtwo", "to": "+15551234567", "body": "", "media": ["https://m.example/a.png"], "status": None}]})
    # Twilio's retry of the finished message still gets the first answer
    assert h.post("echo", sms(SID)).body == twiml.response("Great, we'll get right back to you.")


def test_a_refused_message_is_handled_at_once_and_names_its_validator(h: Harness) -> None:
    """A message a validator refused is handled, with no replies, and the answer names the validator."""
    h.post("echo", sms(SID, body=""))
    assert get(h, replies_url()) == (200, {"handled": True, "replies": [], "refused": "length"})


def test_a_dead_letter_is_handled_with_its_error_line(h: Harness) -> None:
    """A message that ended as a dead letter is handled, and the answer carries its record's error line."""
    h.post("echo", sms(SID))
    finish(h.store, "echo", SID, dead=True)
    assert get(h, replies_url()) == (200, {"handled": True, "replies": [], "error": "KeyError: 'x'"})


def test_a_finished_keyword_replays_its_answer() -> None:
    """HELP, recorded by a worker (its seen value marked finished), is answered with help_response again on a
    Twilio retry, and is handled."""
    h = Harness({"echo": {"help_response": "Text anything."}})
    first = h.post("echo", sms(SID, body="HELP"))
    finish(h.store, "echo", SID)
    assert h.post("echo", sms(SID, body="HELP")).body == first.body == twiml.response("Text anything.")
    assert get(h, replies_url())[1]["handled"] is True


def test_an_unknown_message_sid_is_not_handled(h: Harness) -> None:
    """A MessageSid never seen (or forgotten after a day) answers not handled, no replies."""
    assert get(h, replies_url(sid="SMnever")) == (200, {"handled": False, "replies": []})


def test_a_signed_topic_wants_the_signature_of_the_full_url() -> None:
    """Where the topic validates signatures, the GET is signed over the full URL with the topic's auth token (as
    Twilio signs a GET webhook): 403 without it or with another token's, 200 with it; behind public_url, that
    origin's URL is the one signed."""
    h = Harness(public_url="https://sms.example.com")
    url = replies_url("signed")
    public = replies_url("signed", host="https://sms.example.com")
    assert get(h, url)[0] == 403
    wrong = {"X-Twilio-Signature": [RequestValidator("other").compute_signature(public, {})]}
    assert get(h, url, wrong)[0] == 403
    local = {"X-Twilio-Signature": [RequestValidator(TOKEN).compute_signature(url, {})]}
    assert get(h, url, local)[0] == 403
    right = {"X-Twilio-Signature": [RequestValidator(TOKEN).compute_signature(public, {})]}
    assert get(h, url, right) == (200, {"handled": False, "replies": []})


@pytest.mark.parametrize(("method", "url", "status", "said"), [
    ("GET", "http://example.com/queue/nope/replies?MessageSid=SM1", 404, "There is no topic called 'nope'."),
    ("GET", "http://example.com/queue/echo/replies", 400, "The MessageSid parameter is missing."),
    ("GET", "http://example.com/queue/echo/replies?MessageSid=", 400, "The MessageSid parameter is missing."),
    ("POST", "http://example.com/queue/echo/replies?MessageSid=SM1", 405, "Only GET is allowed here."),
    ("DELETE", "http://example.com/queue/echo/replies?MessageSid=SM1", 405, "Only GET is allowed here."),
    ("GET", "http://example.com/queue/echo/other?MessageSid=SM1", 404, "There is no such page."),
    ("GET", "http://example.com/queue//replies?MessageSid=SM1", 404, "There is no such page."),
    ("GET", "http://example.com/queue/echo/replies/x?MessageSid=SM1", 404, "There is no such page."),
])
def test_bad_requests_are_refused_with_a_plain_sentence(h: Harness, method: str, url: str, status: int,
                                                        said: str) -> None:
    """An unknown topic or path is 404, a missing MessageSid 400 naming it, another method than GET 405."""
    r = h.request(method, url)
    assert (r.code, r.body.decode()) == (status, said + "\n")
    if status == 405:
        assert r.headers[b"allow"] == [b"GET"]


def test_redis_unreachable_is_503_with_a_sentence(h: Harness) -> None:
    """While Redis cannot be reached the endpoint answers 503 with a plain sentence, and 200 again after."""
    h.store.down = True
    assert get(h, replies_url()) == (503, "Redis cannot be reached now; try again.\n")
    h.store.down = False
    assert get(h, replies_url())[0] == 200


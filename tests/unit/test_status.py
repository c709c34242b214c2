"""Status callbacks (SPEC section 9): POST /status/<topic>, a status never going back, on_status run by a worker."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator
from twisted.internet.defer import Deferred

from pyrowire.runconfig import resolve
from pyrowire.settings import load_settings
from tests.deferreds import result_of
from tests.unit.test_webhook import TOKEN, Harness, topics
from tests.unit.test_worker import Harness as WorkerHarness

HOST = "http://example.com"


def callback(h: Harness, status: str, sid: str = "SMout1", topic: str = "echo", sign: bool = False,
             **extra: str) -> Any:
    params = {"MessageSid": sid, "MessageStatus": status, "To": "+15551234567", "From": "+15005550006",
              "AccountSid": "AC" + "1" * 32, **extra}
    url = f"{HOST}/status/{topic}"
    headers = {}
    if sign:
        headers["X-Twilio-Signature"] = [RequestValidator(TOKEN).compute_signature(url, params)]
    return h.request("POST", url, urlencode(params).encode(), headers)


def delivery(h: Harness, sid: str = "SMout1", topic: str = "echo") -> Any:
    h.app.runtime = h.app.runtime or _runtime(h)
    return result_of(h.app.delivery(topic, sid))


def _runtime(h: Harness) -> Any:
    from pyrowire.outbound import Sender
    from pyrowire.runtime import Runtime

    return Runtime(h.store, Sender(None, h.store, h.clock), h.clock)  # type: ignore[arg-type]


def test_callbacks_out_of_order_never_move_the_status_backwards() -> None:
    """delivered, then a late sent and queued: the status stays delivered and every event is kept."""
    h = Harness()
    for status in ("delivered", "sent", "queued"):
        assert callback(h, status).code == 200
    found = delivery(h)
    assert found["status"] == "delivered"
    assert [e["status"] for e in found["events"]] == ["delivered", "sent", "queued"]


@pytest.mark.parametrize(("sequence", "final"), [
    (["queued", "sending", "sent", "delivered", "read"], "read"),
    (["sent", "undelivered", "delivered"], "undelivered"),  # a final status stays
    (["failed", "read"], "failed"),  # read only follows delivered
    (["queued", "queued", "sent", "sent"], "sent"),
])
def test_the_status_rank_holds(sequence: list[str], final: str) -> None:
    """Statuses move only forward; a final one changes only from delivered to read; repeats change nothing."""
    h = Harness()
    for status in sequence:
        callback(h, status)
    found = delivery(h)
    assert found["status"] == final
    assert [e["status"] for e in found["events"]] == list(dict.fromkeys(sequence))  # a repeat is not kept twice


def test_an_unknown_sid_has_no_delivery() -> None:
    """app.delivery fires None for an outbound SID no callback named."""
    assert delivery(Harness(), "SMnever") is None


def test_bad_callbacks_are_refused_with_a_sentence() -> None:
    """No MessageSid or MessageStatus is 400, an unknown topic 404, a bad signature 403 where the topic signs."""
    h = Harness()
    r = h.request("POST", f"{HOST}/status/echo", urlencode({"MessageSid": "SM1"}).encode())
    assert r.code == 400 and b"MessageStatus" in r.body
    assert h.request("POST", f"{HOST}/status/nope", urlencode({"MessageSid": "SM1"}).encode()).code == 404
    assert callback(h, "sent", topic="signed").code == 403
    assert callback(h, "sent", topic="signed", sign=True).code == 200
    assert h.request("GET", f"{HOST}/status/echo").code == 405


def test_21610_in_a_callback_opts_the_recipient_out() -> None:
    """A callback carrying Twilio's error 21610 opts its To number out of the topic."""
    h = Harness()
    callback(h, "failed", ErrorCode="21610")
    assert result_of(Deferred.fromCoroutine(h.store.opted_out("echo", "+15551234567")))
    assert delivery(h)["error_code"] == "21610"


def test_a_change_is_queued_for_on_status_and_run_in_a_worker() -> None:
    """With an on_status function, each change is queued; a worker calls it with sid, status and previous."""
    h = Harness()
    seen: list[dict[str, Any]] = []
    h.app.on_status(topic="echo")(seen.append)
    callback(h, "sent")
    callback(h, "delivered")
    callback(h, "sent")  # no change: nothing queued
    payloads = result_of(Deferred.fromCoroutine(h.store.lrange(h.store.keys("echo").queue)))
    assert len(payloads) == 2
    w = WorkerHarness()
    w.app.on_status(topic="echo")(seen.append)
    w.start(lambda m: m)
    for payload in reversed(payloads):
        result_of(Deferred.fromCoroutine(w.store._execute("LPUSH", w.keys.queue, payload)))
    assert [(c["status"], c["previous"]) for c in seen] == [("sent", None), ("delivered", "sent")]
    assert seen[0] == {"sid": "SMout1", "status": "sent", "error_code": None, "to": "+15551234567",
                       "topic": "echo", "previous": None}
    assert [json.loads(r)["result"] for r in result_of(Deferred.fromCoroutine(w.store.lrange(w.keys.statuses)))]


def test_public_url_gives_every_topic_its_status_callback() -> None:
    """With a profile public_url, a topic without status_callback sends with {public_url}/status/<topic>."""
    settings = load_settings({"TOPICS": {**topics(), "own": {"status_callback": "https://x.example/cb"}},
                              "PROFILES": {"dev": {"public_url": "https://sms.example.com/"}}})
    config = resolve({"role": "web"}, {}, settings)
    assert config.settings.topics["echo"].status_callback == "https://sms.example.com/status/echo"
    assert config.settings.topics["own"].status_callback == "https://x.example/cb"

"""Pacing (twilio.mps) and sending first (app.send), in memory on a Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from tests.deferreds import result_of
from tests.unit.test_worker import Harness, now

TWILIO = {"account_sid": "AC" + "1" * 32, "auth_token": "token", "from_number": "+15005550006"}


class _Recording:
    """Twilio accepting every send at once, noting when each arrived (on the harness's clock)."""

    def __init__(self) -> None:
        self.clock: Any = None
        self.sent: list[tuple[float, str]] = []

    def send(self, creds: Any, *, to: str, body: str | None = None, **kwargs: Any) -> Any:
        self.sent.append((self.clock.seconds(), body or ""))
        return succeed(f"SM{len(self.sent):032d}")


def paced(mps: float) -> tuple[Harness, _Recording]:
    twilio = _Recording()
    h = Harness(client=twilio, twilio={**TWILIO, "mps": mps}, concurrency=4)
    twilio.clock = h.clock
    return h, twilio


def test_sends_wait_for_their_turn_at_mps() -> None:
    """At 1 segment a second, three one-segment replies go out at 0, 1 and 2 s; the handlers just wait."""
    h, twilio = paced(1)

    async def handler(message: dict[str, Any]) -> Any:
        message["reply"] = "hi"
        await h.app.sms(message)
        return message

    h.start(handler)
    for i in range(3):
        h.queue(f"SM{i}", number=f"+1555000000{i}")
    assert [t for t, _ in twilio.sent] == [0.0]
    h.clock.advance(1)
    assert [t for t, _ in twilio.sent] == [0.0, 1.0]
    h.clock.advance(1)
    assert [t for t, _ in twilio.sent] == [0.0, 1.0, 2.0]
    assert len(h.records("complete")) == 3


def test_a_long_text_takes_a_turn_per_segment() -> None:
    """A three-segment text at 2 segments a second holds the sender for 1.5 s after the burst."""
    h, twilio = paced(2)
    first = h.app.send("echo", "+15551234567", "a" * 400)  # 3 segments: 2 from the burst, then a 0.5 s debt
    second = h.app.send("echo", "+15551234568", "short")
    assert twilio.sent == []  # 3 segments against a burst of 2: a debt of one, paid in 0.5 s
    h.clock.advance(0.5)
    assert len(twilio.sent) == 1
    h.clock.advance(0.5)
    assert len(twilio.sent) == 2
    assert result_of(first) and result_of(second)


def test_a_topic_without_mps_and_the_sandbox_are_not_paced() -> None:
    """Without mps nothing waits; a sandbox topic with mps does not wait either."""
    twilio = _Recording()
    h = Harness(client=twilio, twilio=TWILIO)
    twilio.clock = h.clock
    for i in range(5):
        result_of(h.app.send("echo", f"+1555000000{i}", "hi"))
    assert len(twilio.sent) == 5
    sandbox = Harness(twilio={"mps": 1})
    for i in range(5):
        result_of(sandbox.app.send("echo", f"+1555000000{i}", "hi"))
    assert len(sandbox.outbox()) == 5


def test_app_send_from_a_timer_fires_with_the_sid_and_none_when_opted_out() -> None:
    """app.send works outside any handler (here from a clock timer) and respects opt-outs."""
    twilio = _Recording()
    h = Harness(client=twilio, twilio=TWILIO)
    twilio.clock = h.clock
    fired: list[Any] = []
    h.clock.callLater(60, lambda: h.app.send("echo", "+15551234567", "reminder").addCallback(fired.append))
    h.clock.advance(60)
    assert fired == ["SM" + "1".zfill(32)]
    now(h.store.opt_out("echo", "+15550000009"))
    assert result_of(h.app.send("echo", "+15550000009", "reminder")) is None
    assert len(twilio.sent) == 1


def test_app_send_needs_something_to_send() -> None:
    """app.send without a body or media fails with a TypeError saying so."""
    h = Harness()
    d: Deferred[Any] = h.app.send("echo", "+15551234567")
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(TypeError)

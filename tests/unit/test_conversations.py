"""Conversations (SPEC section 8), in memory on a Clock: one sender's texts in order, one at a time, with a session."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from pyrowire.recovery import DUE_SECONDS
from tests.deferreds import result_of
from tests.unit.test_worker import DEAD, Harness, now

ANN, BOB = "+15550000001", "+15550000002"


def _slow_by_body(h: Harness, log: list[tuple[str, str, str]]) -> Any:
    """A handler that takes as many seconds as its body says, noting when each message starts and ends."""

    async def handler(message: dict[str, Any]) -> Any:
        log.append(("start", message["number"], message["sid"]))
        await deferLater(h.clock, float(message["message"]))
        log.append(("end", message["number"], message["sid"]))
        return message

    return handler


def test_one_senders_texts_run_one_at_a_time_in_order_while_others_run_alongside() -> None:
    """With concurrency 2, a slow first text still finishes before the sender's second starts; Bob runs meanwhile."""
    h = Harness(concurrency=2)
    log: list[tuple[str, str, str]] = []
    h.start(_slow_by_body(h, log))
    h.queue("A1", "5", ANN)
    h.queue("A2", "1", ANN)
    h.queue("B1", "1", BOB)
    assert log == [("start", ANN, "A1"), ("start", BOB, "B1")]
    h.clock.advance(1)
    assert log[-1] == ("end", BOB, "B1")  # Bob did not wait for Ann
    h.clock.advance(4)
    assert log[-2:] == [("end", ANN, "A1"), ("start", ANN, "A2")]
    h.clock.advance(1)
    assert [sid for kind, _, sid in log if kind == "end"] == ["B1", "A1", "A2"]


def test_an_unordered_topic_runs_one_senders_texts_at_once() -> None:
    """With ordered: False, a sender's second text does not wait for the first."""
    h = Harness(concurrency=2, ordered=False)
    log: list[tuple[str, str, str]] = []
    h.start(_slow_by_body(h, log))
    h.queue("A1", "5", ANN)
    h.queue("A2", "1", ANN)
    assert log == [("start", ANN, "A1"), ("start", ANN, "A2")]


@pytest.mark.expect_logged_errors  # the failed run is logged, as it should be
def test_a_conversation_waits_while_its_message_waits_for_a_retry() -> None:
    """A failed text waiting for its retry holds its sender's later texts behind it, not other senders'."""
    h = Harness(max_attempts=2)
    runs: list[str] = []

    def handler(message: dict[str, Any]) -> Any:
        runs.append(message["sid"])
        if message["sid"] == "A1" and runs.count("A1") == 1:
            raise RuntimeError("try again")
        return message

    h.start(handler)
    h.queue("A1", "x", ANN)
    h.queue("A2", "x", ANN)
    h.queue("B1", "x", BOB)
    assert runs == ["A1", "B1"]
    h.clock.advance(DUE_SECONDS)
    assert runs == ["A1", "B1", "A1", "A2"]


def test_a_reclaimed_message_runs_before_its_senders_later_texts() -> None:
    """A text whose worker died goes back ahead of the texts its sender sent after it."""
    h = Harness()
    h.queue("A1", "x", ANN)
    now(h.store.heartbeat(["echo"], DEAD, ttl=1))
    assert now(h.store.take(h.store.popper(), "echo", DEAD)) is not None  # taken, then the worker died
    h.queue("A2", "x", ANN)
    handled: list[str] = []
    h.start(lambda m: handled.append(m["sid"]))
    assert handled == []  # A2 waits behind A1, which is in the dead worker's list
    h.clock.advance(5)
    assert handled == ["A1", "A2"]


def _counter(message: dict[str, Any]) -> Any:
    session = message["session"]
    session["count"] = session.get("count", 0) + 1
    message["reply"] = str(session["count"])
    return message


def test_the_session_carries_from_one_text_to_the_next_and_app_session_reads_it() -> None:
    """A counter kept in message['session'] reads 1, 2, 3 over a sender's texts; another sender starts at 1."""
    h = Harness()
    h.start(_counter)
    for i in range(3):
        h.queue(f"A{i}", "x", ANN)
    h.queue("B0", "x", BOB)
    replies = {r["message"]["sid"]: r["result"]["reply"] for r in h.records("complete")}
    assert replies == {"A0": "1", "A1": "2", "A2": "3", "B0": "1"}
    assert result_of(h.app.session("echo", ANN)) == {"count": 3}
    result_of(h.app.clear_session("echo", ANN))
    assert result_of(h.app.session("echo", ANN)) == {}
    h.queue("A3", "x", ANN)
    assert h.records("complete")[0]["result"]["reply"] == "1"


@pytest.mark.expect_logged_errors  # the failed run is logged, as it should be
def test_a_failed_handler_leaves_the_session_as_it_was() -> None:
    """A handler that changes the session and then raises stores nothing: the next text sees the old session."""
    h = Harness()

    def handler(message: dict[str, Any]) -> Any:
        _counter(message)
        if message["message"] == "fail":
            raise RuntimeError("after changing the session")
        return message

    h.start(handler)
    h.queue("A0", "ok", ANN)
    h.queue("A1", "fail", ANN)
    h.queue("A2", "ok", ANN)
    assert [r["result"]["reply"] for r in h.records("complete")] == ["2", "1"]


def test_a_session_expires_session_ttl_after_its_last_change() -> None:
    """session_ttl seconds after it last changed, a session is gone and the next text starts from {}."""
    h = Harness(session_ttl=60)
    h.start(_counter)
    h.queue("A0", "x", ANN)
    h.clock.advance(59)
    h.queue("A1", "x", ANN)
    assert h.records("complete")[0]["result"]["reply"] == "2"
    h.clock.advance(60.001)
    assert result_of(h.app.session("echo", ANN)) == {}
    h.queue("A2", "x", ANN)
    assert h.records("complete")[0]["result"]["reply"] == "1"


def test_an_unchanged_session_is_not_written_again() -> None:
    """A text that only reads the session leaves its expiry where the last change put it."""
    h = Harness(session_ttl=60)
    h.start(lambda m: _counter(m) if m["message"] == "count" else m)
    h.queue("A0", "count", ANN)
    h.clock.advance(30)
    h.queue("A1", "read", ANN)
    assert 29 <= now(h.store.ttl(h.keys.session(ANN))) <= 30


@pytest.mark.expect_logged_errors  # the failed run is logged, as it should be
def test_a_session_json_cannot_store_fails_the_run_naming_the_key() -> None:
    """Putting something JSON cannot hold into the session makes the run an error naming the key."""
    h = Harness()

    def handler(message: dict[str, Any]) -> Any:
        message["session"]["when"] = Deferred()
        return message

    h.start(handler)
    h.queue("A0", "x", ANN)
    [record] = h.records("errors")
    assert "message['session']['when']" in record["error"] and "Deferred" in record["error"]
    assert result_of(h.app.session("echo", ANN)) == {}

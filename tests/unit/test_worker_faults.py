"""The worker under every fault (issue 10's (a)-(g)), in memory on a Clock: nothing stuck, nothing run too often."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from pyrowire import scripts
from pyrowire.errors import TwilioError
from pyrowire.recovery import DUE_SECONDS
from pyrowire.scripts import Script
from pyrowire.store import REQUEUE_BATCH
from pyrowire.testing.memory import MemoryStore
from pyrowire.worker import CRASH_RERUNS, TopicWorker
from tests.deferreds import result_of
from tests.unit.test_worker import BEAT_SECONDS, DEAD, Harness, now

OTHER = "+15550000002"


@pytest.mark.expect_logged_errors  # the malformed payload is logged, as it should be
def test_a_malformed_payload_is_dead_lettered_and_the_loop_goes_on() -> None:
    """(a) A payload that is not an envelope becomes a dead letter with a record saying so; the next message runs."""
    h = Harness()
    handled: list[str] = []
    worker = h.start(lambda m: handled.append(m["sid"]))
    now(h.store._execute("LPUSH", h.keys.queue, "not json at all"))
    h.queue("SM1")
    assert handled == ["SM1"]
    [record] = h.records("errors")
    assert "malformed payload" in record["error"]
    assert now(h.store.lrange(h.keys.dead)) == ["not json at all"]
    assert worker.loops == 1 and worker.restarts == 0


@pytest.mark.expect_logged_errors  # the failed run is logged, as it should be
def test_a_result_json_cannot_store_is_an_error_saying_so() -> None:
    """(a) A handler returning a dict with tuple keys is recorded as an error naming the cause, and the loop goes on."""
    h = Harness()
    h.start(lambda m: {("a", "b"): 1} if m["sid"] == "SM1" else m)
    h.queue("SM1")
    h.queue("SM2", number=OTHER)
    [error] = h.records("errors")
    assert "cannot be stored as JSON" in error["error"]
    assert [r["message"]["sid"] for r in h.records("complete")] == ["SM2"]


def test_a_redis_error_reply_while_finishing_is_retried_until_redis_accepts_it() -> None:
    """(a) An error reply (WRONGTYPE here; OOM or READONLY alike) holds the message in flight, then it completes."""
    h = Harness()
    now(h.store._execute("SET", h.keys.complete, "in the way"))
    worker = h.start(lambda m: m)
    h.queue("SM1")
    assert h.length(h.keys.inflight("me:1:cafe")) == 1
    h.clock.advance(1)
    assert h.length(h.keys.inflight("me:1:cafe")) == 1
    now(h.store._execute("DEL", h.keys.complete))
    h.clock.advance(5)
    assert [r["message"]["sid"] for r in h.records("complete")] == ["SM1"]
    assert h.length(h.keys.inflight("me:1:cafe")) == 0
    assert worker.loops == 1


class _Flaky(TopicWorker):
    """A worker whose loop ends unexpectedly once."""

    broken = True

    async def _loop(self, popper: Any) -> None:
        if self.broken:
            self.broken = False
            raise RuntimeError("a bug in the loop")
        await super()._loop(popper)


@pytest.mark.expect_logged_errors  # the loop's end is logged, as it should be
def test_a_loop_that_ends_unexpectedly_is_started_again_and_counted() -> None:
    """(a) A loop that raises is started again, counted in restarts, and handles messages afterwards."""
    h = Harness()
    handled: list[str] = []
    topic = h.app.settings.topics["echo"]
    worker = _Flaky(h.runtime, topic, lambda m: handled.append(m["sid"]), 1, 25.0)
    worker.startService()
    h.clock.advance(1)
    assert worker.restarts == 1 and worker.loops == 1
    h.queue("SM1")
    assert handled == ["SM1"]


@pytest.mark.expect_logged_errors  # giving up on the message is logged, as it should be
def test_a_message_that_kills_every_worker_is_given_up_without_running_again() -> None:
    """(b) Runs are counted before they start: past max_attempts + CRASH_RERUNS the handler is not run again."""
    h = Harness()
    h.queue("SM1")
    for _ in range(1 + CRASH_RERUNS):  # workers that took it and died under it
        assert now(h.store.take(h.store.popper(), "echo", DEAD)) is not None
        now(h.store.reclaim("echo", DEAD))
    handled: list[str] = []
    h.start(lambda m: handled.append(m["sid"]))
    assert handled == []
    [record] = h.records("errors")
    assert "the worker died while handling it" in record["error"]
    assert h.length(h.keys.dead) == 1


def test_a_sigkilled_workers_message_runs_again_even_with_max_attempts_1() -> None:
    """SPEC 6: a message whose worker died mid-run is run again by the next one, though max_attempts is 1."""
    h = Harness()
    h.queue("SM1")
    assert now(h.store.take(h.store.popper(), "echo", DEAD)) is not None
    now(h.store.reclaim("echo", DEAD))
    handled: list[str] = []
    h.start(lambda m: handled.append(m["sid"]))
    assert handled == ["SM1"]
    [record] = h.records("complete")
    assert record["attempt"] == 2


@pytest.mark.expect_logged_errors  # the failed run is logged, as it should be
def test_a_retry_waits_outside_the_slot() -> None:
    """(c) With concurrency 1, another sender's message runs while a failed one waits for its retry."""
    h = Harness(max_attempts=3)
    runs: list[str] = []

    def handler(message: dict[str, Any]) -> Any:
        runs.append(message["sid"])
        if message["sid"] == "SM1" and runs.count("SM1") == 1:
            raise RuntimeError("not yet")
        return message

    h.start(handler)
    h.queue("SM1")
    h.queue("SM2", number=OTHER)
    assert runs == ["SM1", "SM2"]  # SM2 did not wait out SM1's backoff
    assert now(h.store._execute("ZCARD", h.keys.schedule)) == 1
    h.clock.advance(DUE_SECONDS)
    assert runs == ["SM1", "SM2", "SM1"]
    [record] = [r for r in h.records("complete") if r["message"]["sid"] == "SM1"]
    assert record["attempt"] == 2


@pytest.mark.expect_logged_errors  # the failed runs are logged, as they should be
def test_attempts_survive_a_stop_while_the_message_waits_for_its_retry() -> None:
    """(c) A message waiting in the schedule keeps its count across a stop: a new worker runs its last attempt."""
    h = Harness(max_attempts=2)
    runs: list[int] = []

    def failing(message: dict[str, Any]) -> Any:
        runs.append(1)
        raise RuntimeError("always")

    h.start(failing)
    h.queue("SM1")
    result_of(h.stop())
    h.start(failing)
    h.clock.advance(2)
    assert len(runs) == 2
    assert h.length(h.keys.dead) == 1


class _Refusing:
    """Twilio answering every send with a permanent error."""

    def send(self, creds: Any, **kwargs: Any) -> Any:
        return fail(TwilioError(21211, "The 'To' number is not a valid phone number.", 400))


TWILIO = {"account_sid": "AC" + "1" * 32, "auth_token": "token", "from_number": "+15005550006"}


@pytest.mark.expect_logged_errors  # the failed run is logged, as it should be
def test_a_send_the_handler_did_not_await_is_accounted_for() -> None:
    """(d) The 2014 style, app.sms(message) then return: Twilio's refusal makes the run an error carrying its code."""
    h = Harness(client=_Refusing(), twilio=TWILIO)

    def legacy(message: dict[str, Any]) -> Any:
        message["reply"] = "hi"
        h.app.sms(message)
        return message

    h.start(legacy)
    h.queue("SM1")
    assert h.records("complete") == []
    [record] = h.records("errors")
    assert "21211" in record["error"]


def test_stopping_closes_parked_pops_before_waiting_for_handlers() -> None:
    """(e) A message accepted while a worker stops (its handlers still running) is not moved into its in-flight list."""
    h = Harness(concurrency=2)
    release: Deferred[None] = Deferred()
    h.start(lambda m: release if m["sid"] == "SM1" else m)
    h.queue("SM1")
    stopping = h.stop()
    h.queue("SM2", number=OTHER)
    assert h.length(h.keys.inflight("me:1:cafe")) == 1  # SM1 only
    assert h.length(h.keys.queue) == 1
    release.callback(None)
    result_of(stopping)
    assert [r["message"]["sid"] for r in h.records("complete")] == ["SM1"]
    assert json.loads(now(h.store.lrange(h.keys.queue))[0])["message"]["sid"] == "SM2"


def test_a_message_stranded_in_a_live_workers_list_is_swept_back() -> None:
    """(f) An in-flight message no loop holds (its pop's answer was lost) is put back after two beats and handled."""
    h = Harness()
    handled: list[str] = []
    h.start(lambda m: handled.append(m["sid"]))
    payload = h.queue("SM1", number=OTHER)
    handled.clear()
    # as if a BLMOVE had moved it and the answer never came back
    now(h.store._execute("LPUSH", h.keys.inflight("me:1:cafe"), payload.replace("SM1", "SMlost")))
    h.clock.advance(BEAT_SECONDS)
    assert handled == []  # seen unheld once: maybe an answer in transit
    h.clock.advance(BEAT_SECONDS)
    assert handled == ["SMlost"]
    assert h.length(h.keys.inflight("me:1:cafe")) == 0


class _Counting(MemoryStore):
    """The in-memory store, counting the REQUEUE scripts it runs and the most letters one was asked to move."""

    requeues = 0
    largest = 0

    async def _script(self, script: Script, keys: Sequence[str], args: Sequence[Any],
                      execute: Any = None) -> Any:
        if script is scripts.REQUEUE:
            self.requeues += 1
            self.largest = max(self.largest, int(args[0]))
        return await super()._script(script, keys, args, execute)


def test_dead_letters_are_requeued_in_bounded_batches() -> None:
    """(g) requeue_dead moves a long dead-letter list back in scripts of at most REQUEUE_BATCH letters each."""
    store = _Counting(Clock())
    keys = store.keys("echo")
    for i in range(350):
        now(store._execute("LPUSH", keys.dead, json.dumps({"message": {"sid": f"D{i}", "number": f"+1{i:05d}"},
                                                           "received_at": 0.0})))
    assert now(store.requeue_dead("echo")) == 350
    assert (store.requeues, store.largest) == (4, REQUEUE_BATCH)
    assert now(store.llen(keys.queue)) == 350

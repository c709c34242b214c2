"""TopicWorker and Supervisor over a MemoryStore, a task.Clock and a sandboxed Sender."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import pytest
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, capturedLogs, formatEvent

import pyrowire
from pyrowire.errors import RedisReplyError
from pyrowire.keys import HEARTBEAT_TTL
from pyrowire.outbound import Sender
from pyrowire.recovery import Supervisor, beat_interval
from pyrowire.runtime import Runtime
from pyrowire.store import Replies
from pyrowire.testing.fake_twilio import FakeTwilio
from pyrowire.testing.memory import MemoryStore
from pyrowire.twilio import TwilioClient
from pyrowire.worker import POP_TIMEOUT, TopicWorker
from tests.deferreds import result_of

BEAT_SECONDS = beat_interval(HEARTBEAT_TTL)
DEAD = "dead-host:99:deadbeef"




def now(coro: Any) -> Any:
    """Run one MemoryStore call, which finishes at once."""
    return result_of(Deferred.fromCoroutine(coro))


class Harness:
    """An App over a MemoryStore and Clock, with a sandboxed Sender and one topic ``echo``."""

    def __init__(self, grace: float = 25.0, concurrency: int = 1, client: Any = None,
                 store: type[MemoryStore] = MemoryStore, **topic: Any) -> None:
        self.clock = Clock()
        self.store = store(self.clock)
        self.app = pyrowire.App({"TOPICS": {"echo": {"retention": 100, **topic}}, "PROFILES": {"dev": {}}})
        client = client or TwilioClient(self.clock, http=cast(HTTPClient, StubTreq(FakeTwilio())))
        store = self.store
        self.runtime = Runtime(store, Sender(client, store, self.clock), self.clock, worker_id="me:1:cafe")
        self.app.runtime = self.runtime
        self.grace = grace
        self.concurrency = concurrency
        self.keys = self.store.keys("echo")
        self.worker: TopicWorker | None = None
        self.supervisor: Supervisor | None = None

    def start(self, handler: Callable[..., Any]) -> TopicWorker:
        topic = self.app.settings.topics["echo"]
        self.worker = TopicWorker(self.runtime, topic, handler, self.concurrency, self.grace,
                                  self.app.opt_out_hooks.get("echo"), self.app.status_hooks.get("echo"))
        self.supervisor = Supervisor(self.runtime, ["echo"], [self.worker])
        result_of(self.supervisor.first_beat())
        self.supervisor.startService()
        self.worker.startService()
        return self.worker

    def stop(self) -> Deferred[None]:
        """Stop as the service does: the worker (drain), then the supervisor (put back)."""
        assert self.worker is not None and self.supervisor is not None
        worker, supervisor = self.worker, self.supervisor

        async def go() -> None:
            await worker.stopService()
            await supervisor.stopService()

        return Deferred.fromCoroutine(go())

    def queue(self, sid: str, body: str = "hello", number: str = "+15551234567") -> str:
        """Accept a message as the webhook would (in its sender's conversation); answers the queued payload."""
        message = {
            "message": body,
            "number": number,
            "sid": sid,
            "topic": "echo",
            "to": "+15005550006",
            "from_city": None,
            "from_state": None,
            "from_country": None,
            "from_zip": None,
            "media": {"count": 0, "media": {}},
            "reply": None,
        }
        payload = json.dumps({"message": message, "received_at": self.clock.seconds()})
        ordered = self.app.settings.topics["echo"].ordered
        assert now(self.store.accept("echo", sid, "a", payload, number if ordered else None)) is None
        return payload

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(r) for r in now(self.store.lrange(getattr(self.keys, kind)))]

    def length(self, key: str) -> int:
        return cast(int, now(self.store.llen(key)))

    def outbox(self) -> list[dict[str, Any]]:
        return [json.loads(r) for r in now(self.store.lrange(self.keys.outbox))]


def echo_plain(app: pyrowire.App) -> Callable[..., Any]:
    def handler(message: dict[str, Any]) -> Any:
        message["reply"] = message["message"].upper()
        app.sms(message)  # not awaited: the sandbox send into the in-memory store is done at once
        return message

    return handler


def echo_deferred(app: pyrowire.App) -> Callable[..., Any]:
    def handler(message: dict[str, Any]) -> Deferred[Any]:
        message["reply"] = message["message"].upper()
        return app.sms(message).addCallback(lambda _sid: message)

    return handler


def echo_async(app: pyrowire.App) -> Callable[..., Any]:
    async def handler(message: dict[str, Any]) -> Any:
        message["reply"] = message["message"].upper()
        await app.sms(message)
        return message

    return handler


@pytest.mark.parametrize("make", [echo_plain, echo_deferred, echo_async])
def test_queued_message_is_handled_and_recorded_complete(make: Callable[[pyrowire.App], Any]) -> None:
    """A queued message runs the handler (plain, Deferred or async) and is recorded complete with its SIDs."""
    h = Harness()
    h.clock.advance(100)
    h.start(make(h.app))
    h.queue("SM1")
    [record] = h.records("complete")
    [sent] = h.outbox()
    assert record["result"]["reply"] == "HELLO"
    assert record["result"]["sid"] == "SM1"
    assert record["sids"] == [sent["sid"]]
    assert sent["sid"].startswith("SB")
    assert (sent["to"], sent["body"], sent["in_reply_to"]) == ("+15551234567", "HELLO", "SM1")
    assert record["worker"] == "me:1:cafe"
    assert record["received_at"] == record["started_at"] == 100
    assert h.length(h.keys.inflight("me:1:cafe")) == 0
    assert h.length(h.keys.queue) == 0
    assert h.runtime.outbound.exchanges == {}


def test_plain_value_handler_result_is_recorded() -> None:
    """What a plain handler returns is recorded as the result; None records the message itself."""
    h = Harness()
    results = iter([{"answer": 42}, None])
    h.start(lambda message: next(results))
    h.queue("SM1")
    h.queue("SM2")
    first, second = reversed(h.records("complete"))
    assert first["result"] == {"answer": 42}
    assert second["result"]["sid"] == "SM2"
    assert second["sids"] == []


def test_messages_are_handled_in_order_one_at_a_time() -> None:
    """With concurrency 1, queued messages are handled oldest first, each after the last finished."""
    h = Harness()
    seen: list[str] = []

    def handler(message: dict[str, Any]) -> Deferred[None]:
        seen.append(message["sid"])
        return deferLater(h.clock, 1, lambda: None)

    for i in range(3):
        h.queue(f"SM{i}")
    h.start(handler)
    assert seen == ["SM0"]
    h.clock.advance(1)
    assert seen == ["SM0", "SM1"]
    h.clock.advance(1)
    h.clock.advance(1)
    assert seen == ["SM0", "SM1", "SM2"]
    assert [r["message"]["sid"] for r in reversed(h.records("complete"))] == seen


@pytest.mark.expect_logged_errors  # the handler's failure is logged, as it should be
@pytest.mark.parametrize("style", ["plain", "deferred", "async"])  # the handler's failure is logged, as it should be
def test_raising_handler_is_recorded_in_errors_with_traceback(style: str) -> None:
    """A handler that raises (or fails its Deferred) is recorded in errors with its traceback."""
    h = Harness()

    def plain(message: dict[str, Any]) -> None:
        raise ValueError("no good: " + message["sid"])

    def deferred(message: dict[str, Any]) -> Deferred[None]:
        return deferLater(h.clock, 0, plain, message)

    async def coroutine(message: dict[str, Any]) -> None:
        await succeed(None)
        plain(message)

    handler = {"plain": plain, "deferred": deferred, "async": coroutine}[style]
    h.start(handler)
    h.queue("SM1")
    h.clock.advance(0)
    [record] = h.records("errors")
    assert record["error"] == "ValueError: no good: SM1"
    assert "Traceback" in record["traceback"] and "no good: SM1" in record["traceback"]
    assert record["message"]["sid"] == "SM1"
    assert h.records("complete") == []
    assert h.length(h.keys.inflight("me:1:cafe")) == 0


@pytest.mark.expect_logged_errors  # the handler's failure is logged, as it should be
def test_failed_message_goes_to_dead_letters_after_max_attempts() -> None:
    """With max_attempts 1, a message whose handler raised is in the topic's dead-letter list."""
    h = Harness(max_attempts=1)

    def handler(message: dict[str, Any]) -> None:
        raise ValueError("boom")

    h.start(handler)
    h.queue("SM1")
    assert h.length(h.keys.dead) == 1


@pytest.mark.expect_logged_errors  # the handler's failure is logged, as it should be
def test_handler_failing_to_send_is_recorded_as_error() -> None:
    """A handler whose reply cannot be sent (no service running) is an error, not a lost message."""
    h = Harness()
    h.app.runtime = None
    h.start(echo_async(h.app))
    h.queue("SM1")
    [record] = h.records("errors")
    assert "NotRunning" in record["error"]


def test_pop_waits_then_times_out_and_pops_again() -> None:
    """An idle worker parks a pop, times out on the clock and parks another, taking a later message."""
    h = Harness()
    handled: list[str] = []
    h.start(lambda m: handled.append(m["sid"]))
    h.clock.advance(POP_TIMEOUT * 3)
    assert handled == []
    h.queue("SM1")
    assert handled == ["SM1"]


def test_stop_waits_for_an_in_flight_handler() -> None:
    """stopService waits for a running handler to finish within the grace, and it is recorded complete."""
    h = Harness(grace=25)
    h.start(lambda m: deferLater(h.clock, 10, lambda: "done"))
    h.queue("SM1")
    stopped = h.stop()
    assert not stopped.called
    h.clock.advance(9)
    assert not stopped.called
    h.clock.advance(1)
    result_of(stopped)
    assert [r["result"] for r in h.records("complete")] == ["done"]
    assert h.length(h.keys.inflight("me:1:cafe")) == 0
    assert h.length(h.keys.queue) == 0


def test_stop_takes_no_new_messages() -> None:
    """After stopService, a newly queued message stays in the queue for another worker."""
    h = Harness()
    handled: list[str] = []
    h.start(lambda m: handled.append(m["sid"]))
    result_of(h.stop())
    h.queue("SM1")
    assert handled == []
    assert h.length(h.keys.queue) == 1


def test_stop_gives_up_after_grace_and_leaves_the_message_in_flight() -> None:
    """A handler still running after the grace is left: its message stays in flight for recovery."""
    h = Harness(grace=5)
    h.start(lambda m: Deferred())
    h.queue("SM1")
    stopped = h.stop()
    h.clock.advance(4.9)
    assert not stopped.called
    h.clock.advance(0.1)
    result_of(stopped)
    assert h.length(h.keys.inflight("me:1:cafe")) == 1
    assert h.records("complete") == []


def test_supervisor_puts_back_a_message_popped_but_not_started() -> None:
    """On stop, a message this worker popped but never started goes back to the queue's consuming end."""
    h = Harness()
    handled: list[str] = []
    h.start(lambda m: handled.append(m["sid"]))
    assert h.worker is not None
    result_of(h.worker.stopService())
    h.queue("SM-old")
    h.queue("SM-new", number="+15550000002")
    # a pop whose answer came as the worker stopped: the message is in this worker's in-flight list
    late = h.store.popper().pop(h.keys, "me:1:cafe", POP_TIMEOUT)
    assert json.loads(result_of(late))["message"]["sid"] == "SM-old"
    assert h.supervisor is not None
    result_of(h.supervisor.stopService())
    assert handled == []
    assert h.length(h.keys.inflight("me:1:cafe")) == 0
    other = h.store.popper()
    sids = [json.loads(result_of(other.pop(h.keys, "other", 1)))["message"]["sid"] for _ in range(2)]
    assert sids == ["SM-old", "SM-new"]


def test_recover_reclaims_a_dead_workers_messages_after_its_heartbeat_expires() -> None:
    """Supervisor.recover leaves a live worker's messages alone and puts back a dead one's once it expires."""
    h = Harness()
    now(h.store.heartbeat(["echo"], DEAD, HEARTBEAT_TTL))
    h.queue("SM1")
    assert result_of(h.store.popper().pop(h.keys, DEAD, 1)) is not None
    supervisor = Supervisor(h.runtime, ["echo"], [])
    assert result_of(Deferred.fromCoroutine(supervisor.recover())) == 0
    assert h.length(h.keys.inflight(DEAD)) == 1
    h.clock.advance(HEARTBEAT_TTL + 0.001)  # Redis expires a key once its time is strictly past
    assert result_of(Deferred.fromCoroutine(supervisor.recover())) == 1
    assert h.length(h.keys.inflight(DEAD)) == 0
    assert h.length(h.keys.queue) == 1
    assert now(h.store.workers("echo")) == []


def test_running_supervisor_hands_a_dead_workers_message_to_this_worker() -> None:
    """A message left in flight by a killed worker is handled here within heartbeat + recovery period."""
    h = Harness()
    now(h.store.heartbeat(["echo"], DEAD, HEARTBEAT_TTL))
    h.queue("SM1")
    result_of(h.store.popper().pop(h.keys, DEAD, 1))  # the dead worker took it, then was SIGKILLed
    handled: list[str] = []
    h.start(lambda m: handled.append(m["sid"]))
    assert handled == []
    for _ in range(int((HEARTBEAT_TTL + BEAT_SECONDS) / BEAT_SECONDS) + 1):
        h.clock.advance(BEAT_SECONDS)
    assert handled == ["SM1"]
    assert h.clock.seconds() <= 30
    [record] = h.records("complete")
    assert record["message"]["sid"] == "SM1"


def test_supervisor_never_reclaims_its_own_worker() -> None:
    """The supervisor's own in-flight messages are not reclaimed while it runs, even with beats missed."""
    h = Harness()
    h.start(lambda m: Deferred())
    h.queue("SM1")
    h.clock.advance(HEARTBEAT_TTL * 3)
    assert h.length(h.keys.inflight("me:1:cafe")) == 1
    assert h.length(h.keys.queue) == 0


class RefusingStore(MemoryStore):
    """A MemoryStore whose Redis answers every script with an error while ``refusing`` (as when out of memory)."""

    refusing = False

    async def _execute(self, *command: Any) -> Any:
        if self.refusing and command[0] in ("EVALSHA", "EVAL"):
            raise RedisReplyError(f"Redis (in memory) answered {command[0]}: OOM command not allowed when used "
                                  "memory > 'maxmemory'.")
        return await super()._execute(*command)


def supervisor_said(events: list[dict[str, Any]]) -> list[str]:
    """The supervisor's warnings (and worse) among captured events."""
    return [formatEvent(e) or "" for e in events
            if e["log_level"] >= LogLevel.warn and e.get("log_namespace", "").endswith("Supervisor")]


def test_supervisor_warns_once_while_redis_refuses_its_scripts() -> None:
    """While Redis answers the heartbeat and the due retries with an error reply (OOM, READONLY), the supervisor
    logs one warning for each, no error, and goes on; after they pass again a new refusal is said again."""
    h = Harness(store=RefusingStore)
    store = cast(RefusingStore, h.store)
    h.start(lambda m: m)
    with capturedLogs() as events:
        store.refusing = True
        h.clock.advance(BEAT_SECONDS * 4)
        said = supervisor_said(events)
        assert len(said) == 2
        assert any(line.startswith("heartbeat refused by Redis, retrying: ") and "OOM" in line for line in said)
        assert any(line.startswith("moving due retries refused by Redis, retrying: ") for line in said)
        store.refusing = False
        h.clock.advance(BEAT_SECONDS)
        store.refusing = True
        h.clock.advance(BEAT_SECONDS)
        store.refusing = False
    assert len(supervisor_said(events)) == 4
    assert now(h.store.ttl(h.keys.alive("me:1:cafe"))) > 0


def test_worker_survives_redis_going_down() -> None:
    """Losing Redis fails the parked pops; the loop backs off on the clock and resumes when Redis is back."""
    h = Harness()
    handled: list[str] = []
    h.start(lambda m: handled.append(m["sid"]))
    h.store.down = True
    h.clock.advance(3)
    h.store.down = False
    h.clock.advance(5)
    h.queue("SM1")
    assert handled == ["SM1"]
    assert len(h.records("complete")) == 1


def test_finish_is_retried_when_redis_is_briefly_down() -> None:
    """A record that cannot be written because Redis is down is written once Redis is back."""
    h = Harness()
    h.start(lambda m: deferLater(h.clock, 1, lambda: "ok"))
    h.queue("SM1")
    h.store.down = True
    h.clock.advance(1)
    assert h.worker is not None and h.worker.busy == 1
    h.clock.advance(0.1)
    h.store.down = False
    h.clock.advance(0.5)
    assert [r["result"] for r in h.records("complete")] == ["ok"]
    assert h.length(h.keys.inflight("me:1:cafe")) == 0


@pytest.mark.expect_logged_errors  # the handler's failure is logged, as it should be
def test_retries_up_to_max_attempts_with_backoff_then_dead_letter() -> None:
    """With max_attempts 3, the handler runs three times, backing off between runs, then the message is dead."""
    h = Harness(max_attempts=3)
    runs: list[float] = []

    def handler(message: dict[str, Any]) -> None:
        runs.append(h.clock.seconds())
        raise ValueError("still broken")

    h.start(handler)
    h.queue("SM1")
    assert len(runs) == 1 and h.length(h.keys.dead) == 0
    h.clock.advance(1)
    assert len(runs) == 2
    h.clock.advance(1.9)
    assert len(runs) == 2  # the second backoff is 2 s
    h.clock.advance(0.1)
    assert len(runs) == 3
    assert h.length(h.keys.dead) == 1
    assert [r["attempt"] for r in h.records("errors")] == [3, 2, 1]
    assert h.length(h.keys.inflight("me:1:cafe")) == 0
    assert now(h.store.requeue_dead("echo")) == 1
    h.clock.advance(0)
    assert len(runs) == 4  # a requeued dead letter starts again from attempt 1


@pytest.mark.expect_logged_errors  # the handler's failure is logged, as it should be
def test_a_rerun_does_not_send_again_what_an_earlier_run_sent() -> None:
    """A handler that sent its reply and then failed re-runs without sending that reply a second time."""
    h = Harness(max_attempts=2)
    calls: list[int] = []

    async def handler(message: dict[str, Any]) -> Any:
        calls.append(1)
        message["reply"] = "once"
        await h.app.sms(message)
        if len(calls) == 1:
            raise RuntimeError("failed after sending")
        return message

    h.start(handler)
    h.queue("SM1")
    h.clock.advance(1)
    assert len(calls) == 2
    [record] = h.records("complete")
    assert len(h.outbox()) == 1
    assert record["sids"] == [h.outbox()[0]["sid"]]


def test_sends_of_a_killed_run_are_not_repeated_by_the_next_worker() -> None:
    """A run killed after sending counts as an attempt, and its recorded sends are skipped by the re-run."""
    h = Harness(max_attempts=2)
    h.queue("SM1")
    now(h.store.heartbeat(["echo"], DEAD, ttl=1))
    assert now(h.store.take(h.store.popper(), "echo", DEAD)) is not None  # the doomed worker took it ...
    now(h.store.record_sent("echo", "SM1", 0, "SMalready"))  # ... sent its reply, and was killed
    h.clock.advance(2)  # its heartbeat expires
    sids: list[str] = []

    async def handler(message: dict[str, Any]) -> Any:
        message["reply"] = "again?"
        sids.append(await h.app.sms(message))
        return message

    h.start(handler)
    h.clock.advance(BEAT_SECONDS)  # the supervisor's recovery puts it back; this worker runs it
    assert sids == ["SMalready"]
    assert h.outbox() == []
    [record] = h.records("complete")
    assert record["attempt"] == 2 and record["sids"] == ["SMalready"]


def test_a_send_is_recorded_while_the_handler_still_runs_and_not_after_it_finished() -> None:
    """A handler still running after a send has it recorded on the next turn; a finished one needs no record."""
    h = Harness()

    async def slow(message: dict[str, Any]) -> Any:
        message["reply"] = "first"
        await h.app.sms(message)
        await deferLater(h.clock, 10)
        return message

    h.start(slow)
    h.queue("SM1")
    assert now(h.store.sent("echo", "SM1")) == {}  # not yet: same reactor turn as the send
    h.clock.advance(0)
    assert now(h.store.sent("echo", "SM1")) == {0: h.outbox()[0]["sid"]}
    h.clock.advance(10)
    assert now(h.store.sent("echo", "SM1")) == {}  # the finish record dropped it
    assert len(h.records("complete")) == 1


def test_replies_of_a_fast_and_a_slow_handler_are_read_back_and_the_message_is_handled() -> None:
    """The replies a handler sent are read back in order with their status, whether recorded while it ran or by
    its finish, and the message is handled once it is recorded."""
    h = Harness()

    async def handler(message: dict[str, Any]) -> Any:
        message["reply"] = "first"
        await h.app.sms(message)
        if message["message"] == "slow":
            await deferLater(h.clock, 10)
        await h.app.mms(message, media_url="https://m.example/a.png", include_text=True)
        return message

    h.start(handler)
    h.queue("SM1", "slow")
    h.clock.advance(0)
    [first] = h.outbox()
    replies = now(h.store.replies("echo", "SM1"))
    assert replies == Replies(False, [{"sid": first["sid"], "to": "+15551234567", "body": "first", "media": [],
                                       "status": "delivered"}])
    h.clock.advance(10)
    h.queue("SM2", "fast")
    for sid in ("SM1", "SM2"):
        replies = now(h.store.replies("echo", sid))
        assert replies.handled
        assert [(r["body"], r["media"]) for r in replies.replies] == [
            ("first", []), ("first", ["https://m.example/a.png"])]
        sent = [r["sid"] for r in h.outbox() if r["in_reply_to"] == sid]
        assert [r["sid"] for r in replies.replies] == list(reversed(sent))


@pytest.mark.expect_logged_errors  # the handler's failure is logged, as it should be
def test_a_message_whose_handler_fails_for_good_is_handled_with_its_error() -> None:
    """A failed run with attempts left is not handled yet; its last failure makes it handled, with the error line
    and the replies every run sent, none twice."""
    h = Harness(max_attempts=2)

    async def handler(message: dict[str, Any]) -> Any:
        message["reply"] = "sorry"
        await h.app.sms(message)
        raise ZeroDivisionError("division by zero")

    h.start(handler)
    h.queue("SM1")
    assert not now(h.store.replies("echo", "SM1")).handled
    h.clock.advance(1)
    replies = now(h.store.replies("echo", "SM1"))
    assert replies.handled and replies.error == "ZeroDivisionError: division by zero"
    assert [r["body"] for r in replies.replies] == ["sorry"]


@pytest.mark.expect_logged_errors  # the handler's failures are logged, as they should be
def test_requeued_dead_letters_of_an_unordered_topic_all_run_again() -> None:
    """app.requeue_dead on an ordered: False topic queues every letter, even several of one sender, and all run."""
    h = Harness(ordered=False)
    broken = [True]
    ran: list[str] = []

    def handler(message: dict[str, Any]) -> Any:
        if broken[0]:
            raise ValueError("broken for now")
        ran.append(message["sid"])
        return message

    h.start(handler)
    h.queue("SM1")
    h.queue("SM2")  # the same sender as SM1
    h.clock.advance(0)
    assert h.length(h.keys.dead) == 2
    broken[0] = False
    assert result_of(h.app.requeue_dead("echo")) == 2
    h.clock.advance(0)
    assert sorted(ran) == ["SM1", "SM2"]
    assert h.length(h.keys.conversation("+15551234567")) == 0
    assert now(h.store._execute("SCARD", h.keys.active)) == 0

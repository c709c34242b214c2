"""The store contract: every test runs on the in-memory store (fakeredis) and on a real Valkey.

Both stores run the very scripts of :mod:`pyrowire.scripts`; these tests pin what
the queue does, so that the in-memory store that unit tests and ``pyrowire.testing``
use behaves as the daemon's Redis does, and keeps doing so as scripts change.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater

from pyrowire import envelope, scripts
from pyrowire.errors import RedisReplyError, RedisUnavailable
from pyrowire.keys import DEDUPE_SECONDS, FINISHED, REPLIES_SECONDS, read_seen
from pyrowire.redis_store import RedisStore
from pyrowire.runconfig import parse_redis_url
from pyrowire.store import Finishing, Replies, SessionChange, Store
from pyrowire.testing.memory import MemoryStore

W = "host:1:abcd"
# a pop that should find nothing waits this long (BLMOVE takes fractions of a second)
SHORT = 0.1


async def _turn() -> None:
    """Let the reactor deliver what is in flight (replies from a real server)."""
    await deferLater(reactor, 0.01)


@pytest_twisted.async_yield_fixture(params=["memory", "valkey"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        memory = MemoryStore(reactor, prefix="contract")
        yield memory
        await memory.stop()
        return
    server = request.getfixturevalue("redis_server")
    real = RedisStore(parse_redis_url(server.url), prefix="contract")
    real.start()
    for _ in range(300):
        if real.connected:
            break
        await deferLater(reactor, 0.01)
    assert real.connected
    yield real
    await real.stop()


async def _pop(store: Store, worker: str = W, timeout: float = SHORT) -> str | None:
    popper = store.popper()
    try:
        return await popper.pop(store.keys("echo"), worker, timeout)
    finally:
        await popper.close()


def _payload(sid: str, received_at: float = 1764478393.123456) -> str:
    return envelope.encode({"sid": sid, "media": {"count": 0, "media": {}}, "list": []}, received_at)


@pytest_twisted.ensureDeferred
async def test_accept_queues_once_and_returns_the_first_answer(store: Store) -> None:
    """Concurrent accepts of one MessageSid queue it once; every other caller gets the first answer."""
    results = await defer.gatherResults([
        Deferred.fromCoroutine(store.accept("echo", "SM1", "a", f"p{i}")) for i in range(20)
    ])
    assert results.count(None) == 1 and set(results) == {None, "a"}
    assert await store.llen(store.keys("echo").queue) == 1
    assert await store.answer_for("echo", "SM1") == "a"


@pytest_twisted.ensureDeferred
async def test_an_answer_without_payload_queues_nothing(store: Store) -> None:
    """An accept with no payload (a validator refused it) records the answer and queues nothing."""
    assert await store.accept("echo", "SM2", "v:length", None) is None
    assert await store.accept("echo", "SM2", "a", "p") == "v:length"
    assert await store.llen(store.keys("echo").queue) == 0


@pytest_twisted.ensureDeferred
async def test_dedupe_and_sent_records_expire_after_a_day(store: Store) -> None:
    """The seen and sent keys carry DEDUPE_SECONDS of life; the queue itself never expires."""
    keys = store.keys("echo")
    await store.accept("echo", "SM3", "a", "x")
    await store.record_sent("echo", "SM3", 0, "SMout")
    assert DEDUPE_SECONDS - 5 < await store.ttl(keys.seen("SM3")) <= DEDUPE_SECONDS
    assert DEDUPE_SECONDS - 5 < await store.ttl(keys.sent("SM3")) <= DEDUPE_SECONDS
    assert await store.ttl(keys.queue) == -1
    assert await store.ttl(keys.seen("nothing")) == -2


@pytest_twisted.ensureDeferred
async def test_heartbeat_registers_the_worker_with_its_ttl(store: Store) -> None:
    """heartbeat adds the worker to each topic's set and sets its alive key with the given ttl."""
    await store.heartbeat(["echo", "joke"], W, 7)
    for topic in ("echo", "joke"):
        assert await store.workers(topic) == [W]
        assert 5 < await store.ttl(store.keys(topic).alive(W)) <= 7


@pytest_twisted.ensureDeferred
async def test_pop_moves_the_oldest_into_in_flight(store: Store) -> None:
    """A pop takes the oldest queued message and pushes it on the left of the worker's in-flight list."""
    keys = store.keys("echo")
    for i in range(3):
        await store.accept("echo", f"SM{i}", "a", f"m{i}")
    assert [await _pop(store), await _pop(store)] == ["m0", "m1"]
    assert await store.lrange(keys.inflight(W)) == ["m1", "m0"]
    assert await store.lrange(keys.queue) == ["m2"]


@pytest_twisted.ensureDeferred
async def test_pop_on_an_empty_queue_times_out_with_none(store: Store) -> None:
    """A pop that finds nothing within its timeout fires with None and moves nothing."""
    assert await _pop(store) is None
    assert await store.llen(store.keys("echo").inflight(W)) == 0


@pytest_twisted.ensureDeferred
async def test_a_parked_pop_takes_a_message_pushed_later(store: Store) -> None:
    """A pop parked on an empty queue fires with a message accepted after it, without stalling other commands."""
    popper = store.popper()
    try:
        fired: list[object] = []
        d = popper.pop(store.keys("echo"), W, 0)
        d.addBoth(lambda result: fired.append(result) or result)
        await _turn()
        assert fired == []
        assert await store.ping()  # the store's own connection is not held by the pop
        await store.accept("echo", "SM1", "a", "late")
        assert await d == "late"
        assert await store.lrange(store.keys("echo").inflight(W)) == ["late"]
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_parked_pops_are_served_longest_waiting_first(store: Store) -> None:
    """Two pops parked on one queue get one message each, the first parked the first message."""
    first, second = store.popper(), store.popper()
    try:
        a = first.pop(store.keys("echo"), "w-a", 0)
        await _turn()
        b = second.pop(store.keys("echo"), "w-b", 0)
        await _turn()
        await store.accept("echo", "SM1", "a", "one")
        await store.accept("echo", "SM2", "a", "two")
        assert [await a, await b] == ["one", "two"]
    finally:
        await first.close()
        await second.close()


@pytest_twisted.ensureDeferred
async def test_a_cancelled_pop_still_moves_a_message_until_its_connection_closes(store: Store) -> None:
    """Cancelling a parked pop only stops waiting for its answer: Redis still moves the next message in flight.

    This is why a worker must close its pop connections before it stops caring about them.
    """
    keys = store.keys("echo")
    popper = store.popper()
    d = popper.pop(keys, W, 0)
    await _turn()
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    await store.accept("echo", "SM1", "a", "moved")
    await _turn()
    assert await store.lrange(keys.inflight(W)) == ["moved"]
    assert await store.llen(keys.queue) == 0
    await popper.close()


@pytest_twisted.ensureDeferred
async def test_closing_a_popper_withdraws_its_parked_pop(store: Store) -> None:
    """A parked pop fails with RedisUnavailable when its popper closes, and a message pushed after stays queued."""
    keys = store.keys("echo")
    popper = store.popper()
    d = popper.pop(keys, W, 0)
    await _turn()
    await popper.close()
    with pytest.raises(RedisUnavailable):
        await d
    await store.accept("echo", "SM1", "a", "kept")
    await _turn()
    assert await store.lrange(keys.queue) == ["kept"]
    with pytest.raises(RedisUnavailable):
        await popper.pop(keys, W, SHORT)


@pytest_twisted.ensureDeferred
async def test_finish_records_trims_and_forgets_sends(store: Store) -> None:
    """finish drops one copy from in-flight, keeps the newest `retention` records and drops the send record."""
    keys = store.keys("echo")
    for i in range(4):
        await store.accept("echo", f"SM{i}", "a", f"m{i}")
        await _pop(store)
        await store.record_sent("echo", f"SM{i}", 0, f"SMout{i}")
        await store.finish("echo", W, f"m{i}", f"SM{i}", f"r{i}", "complete", 2)
        assert await store.sent("echo", f"SM{i}") == {}
    assert await store.lrange(keys.complete) == ["r3", "r2"]
    assert await store.llen(keys.inflight(W)) == 0
    assert await store.llen(keys.dead) == 0


@pytest_twisted.ensureDeferred
async def test_finish_removes_only_one_copy_of_a_payload(store: Store) -> None:
    """finish is LREM with count 1: of two identical in-flight payloads, one stays."""
    keys = store.keys("echo")
    await store.accept("echo", "SM1", "a", "same")
    await store.accept("echo", "SM2", "a", "same")
    await _pop(store)
    await _pop(store)
    await store.finish("echo", W, "same", "SM1", "r", "errors", 10)
    assert await store.lrange(keys.inflight(W)) == ["same"]
    assert await store.lrange(keys.errors) == ["r"]


@pytest_twisted.ensureDeferred
async def test_a_dead_finish_keeps_the_payload_whole_and_requeue_returns_it_behind_the_queue(store: Store) -> None:
    """A dead message is kept in the dead list; requeue_dead moves dead letters behind what is queued, oldest first."""
    keys = store.keys("echo")
    for sid in ("SM1", "SM2"):
        await store.accept("echo", sid, "a", _payload(sid))
        payload = await _pop(store)
        assert payload is not None
        await store.finish("echo", W, payload, sid, "{}", "errors", 10, dead=True)
    await store.accept("echo", "SM3", "a", _payload("SM3"))
    assert await store.llen(keys.dead) == 2
    assert await store.requeue_dead("echo") == 2
    assert await store.llen(keys.dead) == 0
    order = [json.loads(p)["message"]["sid"] for p in reversed(await store.lrange(keys.queue))]
    assert order == ["SM3", "SM1", "SM2"]


@pytest_twisted.ensureDeferred
async def test_reclaim_refuses_a_live_worker_unless_forced(store: Store) -> None:
    """reclaim answers -1 and moves nothing while the worker's heartbeat lives; forced, it moves them unchanged."""
    keys = store.keys("echo")
    await store.heartbeat(["echo"], W, 60)
    await store.accept("echo", "SM1", "a", _payload("SM1"))
    popped = await _pop(store)
    assert await store.reclaim("echo", W) == -1
    assert await store.llen(keys.inflight(W)) == 1
    assert await store.reclaim("echo", W, force=True) == 1
    assert await store.lrange(keys.queue) == [popped]
    assert await store.workers("echo") == []


@pytest_twisted.ensureDeferred
async def test_reclaim_puts_a_dead_workers_messages_first_in_line_unchanged(store: Store) -> None:
    """A dead worker's messages go back to the consuming end of the queue, oldest first, byte for byte."""
    keys = store.keys("echo")
    await store.heartbeat(["echo"], W, 60)
    for sid in ("SM1", "SM2"):
        await store.accept("echo", sid, "a", _payload(sid))
        await _pop(store)
    await store.accept("echo", "SM3", "a", _payload("SM3"))
    await store._execute("DEL", keys.alive(W))  # what expiry does to a SIGKILLed worker's heartbeat
    assert await store.reclaim("echo", W) == 2
    assert await store.workers("echo") == []
    assert [await _pop(store, "other") for _ in range(3)] == [_payload("SM1"), _payload("SM2"), _payload("SM3")]


@pytest_twisted.ensureDeferred
async def test_a_payload_is_never_rewritten_on_its_way(store: Store) -> None:
    """Through take, reclaim, retry, due, dead and requeue a payload stays what the webhook queued (no cjson)."""
    keys = store.keys("echo")
    original = _payload("SM1", received_at=1764478393.123456789)
    await store.accept("echo", "SM1", "a", original, "+15551234567")
    popper = store.popper()
    try:
        taken = await store.take(popper, "echo", "doomed")
        assert taken is not None and taken.payload == original
        assert await store.reclaim("echo", "doomed") == 1  # never heartbeated: dead
        taken = await store.take(popper, "echo", W)
        assert taken is not None and taken.payload == original
        await store.retry("echo", W, original, "{}", 10, due=5.0)
        assert await store.due("echo", now=5.0) == 1
        taken = await store.take(popper, "echo", W)
        assert taken is not None
        await store.finish("echo", W, taken.payload, "SM1", "{}", "errors", 10, dead=True,
                           conversation="+15551234567")
        assert await store.lrange(keys.dead) == [original]
        assert await store.requeue_dead("echo") == 1
        assert await store.lrange(keys.queue) == [original]
    finally:
        await popper.close()


# --- runs, counted before each run -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_take_counts_the_run_before_the_handler_and_reads_the_session(store: Store) -> None:
    """TAKE moves the oldest ready message in flight, counts its run and returns the conversation's session."""
    keys = store.keys("echo")
    await store._execute("SET", keys.session("+15551234567"), '{"n":1}')
    await store.accept("echo", "SM1", "a", _payload("SM1"))
    popper = store.popper()
    try:
        taken = await store.take(popper, "echo", W)
        assert taken is not None
        assert (taken.payload, taken.runs, taken.session) == (_payload("SM1"), 1, None)  # no number in it
        assert await store.lrange(keys.inflight(W)) == [_payload("SM1")]
        assert await store.take(popper, "echo", W) is None
        await _accept(store, "A1", "+15551234567")
        taken = await store.take(popper, "echo", W)
        assert taken is not None and (taken.runs, taken.session) == (1, '{"n":1}')
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_take_answers_with_the_payload_last(store: Store) -> None:
    """TAKE's reply ends with the payload, its only bulk string when there is no session: txredisapi's reader
    pauses the connection for a reactor turn after a bulk string that has more of the reply behind it."""
    keys = store.keys("echo")
    await store.accept("echo", "SM1", "a", _payload("SM1"))
    reply = await store._script(scripts.TAKE, (keys.queue, keys.inflight(W), keys.runs, keys.optout),
                                (keys.session(""),))
    assert [int(reply[0]), int(reply[1]), reply[2], reply[3]] == [1, 0, None, _payload("SM1")]


@pytest_twisted.ensureDeferred
async def test_begin_counts_a_message_a_blocking_pop_moved(store: Store) -> None:
    """After a BLMOVE, BEGIN counts the run and reads the session (none here) without moving anything."""
    await store.accept("echo", "SM1", "a", _payload("SM1"), "+15551234567")
    popper = store.popper()
    try:
        payload = await popper.pop(store.keys("echo"), W, SHORT)
        assert payload == _payload("SM1")
        taken = await store.begin(popper, "echo", payload)
        assert (taken.runs, taken.session) == (1, None)
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_runs_survive_reclaim_and_retry_and_are_forgotten_by_finish_and_requeue(store: Store) -> None:
    """The run count lives beside the message: a crash or a retry keeps it, the end of the message clears it."""
    popper = store.popper()
    try:
        await store.accept("echo", "SM1", "a", _payload("SM1"))
        first = await store.take(popper, "echo", "doomed")
        assert first is not None and first.runs == 1
        await store.reclaim("echo", "doomed")
        taken = await store.take(popper, "echo", W)
        assert taken is not None and taken.runs == 2
        await store.retry("echo", W, taken.payload, "{}", 10, due=0.0)
        await store.due("echo", now=1.0)
        taken = await store.take(popper, "echo", W)
        assert taken is not None and taken.runs == 3
        await store.finish("echo", W, taken.payload, "SM1", "{}", "errors", 10, dead=True)
        await store.requeue_dead("echo")
        taken = await store.take(popper, "echo", W)
        assert taken is not None and taken.runs == 1  # a re-queued dead letter gets max_attempts afresh
        await store.finish("echo", W, taken.payload, "SM1", "{}", "complete", 10)
        assert int(await store._execute("HLEN", store.keys("echo").runs)) == 0
    finally:
        await popper.close()


# --- retries ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_retry_waits_in_the_schedule_until_due(store: Store) -> None:
    """RETRY records the failure and parks the message; DUE moves it back only once due, earliest first."""
    keys = store.keys("echo")
    for sid, due in (("SM1", 20.0), ("SM2", 10.0)):
        await store.accept("echo", sid, "a", _payload(sid))
        await _pop(store)
        await store.retry("echo", W, _payload(sid), f"failed {sid}", 10, due=due)
    assert await store.llen(keys.inflight(W)) == 0
    assert await store.lrange(keys.errors) == ["failed SM2", "failed SM1"]
    assert await store.due("echo", now=9.9) == 0
    assert await store.due("echo", now=30.0) == 2
    assert [await _pop(store), await _pop(store)] == [_payload("SM2"), _payload("SM1")]


# --- conversations -----------------------------------------------------------------------------

A, B = "+15550000001", "+15550000002"


async def _accept(store: Store, sid: str, number: str) -> None:
    payload = envelope.encode({"sid": sid, "number": number}, 1.0)
    assert await store.accept("echo", sid, "a", payload, number) is None


async def _take_sid(store: Store, popper: Any, worker: str = W) -> str | None:
    taken = await store.take(popper, "echo", worker)
    return None if taken is None else str(envelope.decode(taken.payload).message["sid"])


def _members(reply: Any) -> list[str]:
    return sorted(str(m) for m in reply)


@pytest_twisted.ensureDeferred
async def test_one_message_per_conversation_is_ready_at_a_time(store: Store) -> None:
    """A sender's second message waits until the first finishes; another sender's is ready at once."""
    popper = store.popper()
    try:
        await _accept(store, "A1", A)
        await _accept(store, "A2", A)
        await _accept(store, "B1", B)
        assert [await _take_sid(store, popper), await _take_sid(store, popper)] == ["A1", "B1"]
        assert await _take_sid(store, popper) is None  # A2 waits behind A1
        a1 = envelope.encode({"sid": "A1", "number": A}, 1.0)
        assert await store.finish("echo", W, a1, "A1", "{}", "complete", 10, conversation=A)
        assert await _take_sid(store, popper) == "A2"
        assert _members(await store._execute("SMEMBERS", store.keys("echo").active)) == [A, B]
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_finish_many_does_what_finish_does_for_each_message(store: Store) -> None:
    """finish_many records each message, hands each conversation its next text, stores or drops sessions,
    dead-letters when asked and forgets sends and runs; a message no longer in flight is recorded only."""
    keys = store.keys("echo")
    popper = store.popper()
    try:
        for sid, number in (("A1", A), ("A2", A), ("B1", B), ("C1", "+15550000003")):
            await _accept(store, sid, number)
        taken = [await store.take(popper, "echo", W) for _ in range(3)]
        assert [envelope.decode(t.payload).message["sid"] for t in taken if t] == ["A1", "B1", "C1"]
        a1, b1, c1 = (t.payload for t in taken if t)
        await store.record_sent("echo", "A1", 0, "SMout")
        await store._execute("SET", keys.session(B), '{"n":1}')
        replies = await store.finish_many("echo", W, [
            Finishing(a1, "A1", "ra", "complete", 10, conversation=A, session=SessionChange('{"n":2}', 60)),
            Finishing(b1, "B1", "rb", "errors", 10, dead=True, conversation=B, session=SessionChange(None, 0)),
            Finishing("gone", "X1", "rx", "complete", 10),
            Finishing(c1, "C1", "rc", "complete", 10, conversation="+15550000003"),
        ])
        assert replies == [True, True, False, True]
        assert await store.lrange(keys.complete) == ["rc", "rx", "ra"]
        assert await store.lrange(keys.errors) == ["rb"]
        assert await store.lrange(keys.dead) == [b1]
        assert await store.llen(keys.inflight(W)) == 0
        assert await store.sent("echo", "A1") == {}
        assert _pairs_of(await store._execute("HGETALL", keys.runs)) == {}
        assert await store.session("echo", A) == '{"n":2}' and await store.session("echo", B) is None
        assert _members(await store._execute("SMEMBERS", keys.active)) == [A]  # A2 is ready now
        assert await _take_sid(store, popper) == "A2"
        assert await store.finish_many("echo", W, []) == []
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_finish_many_says_which_message_redis_refused_and_does_the_others(store: Store) -> None:
    """An error reply for one message's commands is None for it (still in flight); the others are finished."""
    keys = store.keys("echo")
    for sid in ("SM1", "SM2"):
        await store.accept("echo", sid, "a", f"p-{sid}")
        await _pop(store)
    await store._execute("SET", keys.errors, "in the way")
    replies = await store.finish_many("echo", W, [Finishing("p-SM1", "SM1", "r1", "errors", 10),
                                                  Finishing("p-SM2", "SM2", "r2", "complete", 10)])
    assert replies == [None, True]
    assert await store.lrange(keys.inflight(W)) == ["p-SM1"]
    assert await store.lrange(keys.complete) == ["r2"]


@pytest_twisted.ensureDeferred
async def test_take_many_takes_and_begins_up_to_so_many_oldest_first(store: Store) -> None:
    """take_many moves up to `most` ready messages in flight, oldest first, each with its runs counted, its
    session (non-ASCII kept whole) and opt-out; one per conversation; [] when nothing is ready."""
    keys = store.keys("echo")
    popper = store.popper()
    try:
        for sid, number in (("A1", A), ("A2", A), ("B1", B), ("C1", "+15550000003")):
            await _accept(store, sid, number)
        await store._execute("SET", keys.session(B), '{"name":"Zoë ✓"}')
        await store.opt_out("echo", "+15550000003")
        await store._execute("HINCRBY", keys.runs, "C1", 2)
        taken = await store.take_many(popper, "echo", W, 5)
        assert [envelope.decode(t.payload).message["sid"] for t in taken] == ["A1", "B1", "C1"]  # A2 waits
        assert [(t.runs, t.session, t.opted_out) for t in taken] == [
            (1, None, False), (1, '{"name":"Zoë ✓"}', False), (3, None, True)]
        assert await store.lrange(keys.inflight(W)) == [t.payload for t in reversed(taken)]
        assert await store.take_many(popper, "echo", W, 5) == []
        await store.accept("echo", "D1", "a", _payload("D1"))
        await store.accept("echo", "D2", "a", _payload("D2"))
        assert [t.payload for t in await store.take_many(popper, "echo", W, 1)] == [_payload("D1")]
    finally:
        await popper.close()


def _pairs_of(reply: Any) -> dict[str, str]:
    items = list(reply.items()) if isinstance(reply, dict) else list(zip(reply[::2], reply[1::2], strict=True))
    return {str(k): str(v) for k, v in items}


@pytest_twisted.ensureDeferred
async def test_a_conversation_is_freed_when_its_last_message_finishes(store: Store) -> None:
    """With nothing waiting behind it, finishing a conversation's message frees it: the next text is ready."""
    popper = store.popper()
    try:
        await _accept(store, "A1", A)
        assert await _take_sid(store, popper) == "A1"
        a1 = envelope.encode({"sid": "A1", "number": A}, 1.0)
        await store.finish("echo", W, a1, "A1", "{}", "errors", 10, dead=True, conversation=A)
        assert _members(await store._execute("SMEMBERS", store.keys("echo").active)) == []
        await _accept(store, "A2", A)
        assert await _take_sid(store, popper) == "A2"
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_a_reclaimed_message_runs_before_its_conversations_later_ones(store: Store) -> None:
    """A dead worker's message goes back ahead of the messages its sender sent after it."""
    popper = store.popper()
    try:
        await _accept(store, "A1", A)
        assert await _take_sid(store, popper, "doomed") == "A1"
        await _accept(store, "A2", A)
        await _accept(store, "B1", B)
        assert await store.reclaim("echo", "doomed") == 1
        assert await _take_sid(store, popper) == "A1"
        assert await _take_sid(store, popper) == "B1"
        assert await _take_sid(store, popper) is None
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_a_finish_for_a_message_no_longer_held_frees_nothing(store: Store) -> None:
    """A finish whose payload was already taken back (reclaimed) is recorded but hands nothing on."""
    popper = store.popper()
    try:
        await _accept(store, "A1", A)
        await _accept(store, "A2", A)
        assert await _take_sid(store, popper, "slow") == "A1"
        await store.reclaim("echo", "slow")
        a1 = envelope.encode({"sid": "A1", "number": A}, 1.0)
        assert not await store.finish("echo", "slow", a1, "A1", "late", "complete", 10, conversation=A)
        assert await store.lrange(store.keys("echo").complete) == ["late"]
        assert await _take_sid(store, popper) == "A1"  # the reclaimed copy, still ahead of A2
        assert await _take_sid(store, popper) is None
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_finish_stores_or_deletes_the_session_with_its_ttl(store: Store) -> None:
    """A completion stores the conversation's session with session_ttl, or deletes it when emptied."""
    keys = store.keys("echo")
    popper = store.popper()
    try:
        await _accept(store, "A1", A)
        taken = await store.take(popper, "echo", W)
        assert taken is not None and taken.session is None
        await store.finish("echo", W, taken.payload, "A1", "{}", "complete", 10, conversation=A,
                           session=SessionChange('{"count":1}', 600))
        assert await store.session("echo", A) == '{"count":1}'
        assert 590 < await store.ttl(keys.session(A)) <= 600
        await _accept(store, "A2", A)
        taken = await store.take(popper, "echo", W)
        assert taken is not None and taken.session == '{"count":1}'
        await store.finish("echo", W, taken.payload, "A2", "{}", "complete", 10, conversation=A,
                           session=SessionChange(None, 600))
        assert await store.session("echo", A) is None
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_dead_letters_are_requeued_in_batches_behind_their_conversation(store: Store) -> None:
    """requeue_dead moves a long list in bounded scripts; a letter whose sender is active waits behind it."""
    keys = store.keys("echo")
    for i in range(250):
        await store._execute("LPUSH", keys.dead, envelope.encode({"sid": f"D{i}", "number": f"+1{i:04d}"}, 1.0))
    await _accept(store, "A1", A)
    await store._execute("LPUSH", keys.dead, envelope.encode({"sid": "DA", "number": A}, 1.0))
    assert await store.requeue_dead("echo", batch=100) == 251
    assert await store.llen(keys.dead) == 0
    assert await store.llen(keys.queue) == 251  # A1 and the 250 others; DA waits behind A1
    assert await store.llen(keys.conversation(A)) == 1


@pytest_twisted.ensureDeferred
async def test_sweep_puts_back_only_what_is_still_in_flight(store: Store) -> None:
    """SWEEP moves the named payloads from the in-flight list to the front of the queue, if they are there."""
    keys = store.keys("echo")
    await store.accept("echo", "SM1", "a", "p1")
    await _pop(store)
    assert await store.sweep("echo", W, ["p1", "not-there"]) == 1
    assert await store.lrange(keys.queue) == ["p1"]
    assert await store.llen(keys.inflight(W)) == 0


@pytest_twisted.ensureDeferred
async def test_untake_puts_back_messages_taken_ahead_in_order_with_their_runs_uncounted(store: Store) -> None:
    """UNTAKE (a stopping worker's messages taken ahead) moves those still in flight back to the consuming
    end of the queue, the oldest first out, and takes back the run TAKE_MANY counted; a message no longer
    in flight is left alone."""
    keys = store.keys("echo")
    popper = store.popper()
    try:
        for sid, number in (("A1", A), ("B1", B), ("C1", "+15550000003"), ("D1", "+15550000004")):
            await _accept(store, sid, number)
        await store._execute("HINCRBY", keys.runs, "C1", 2)
        taken = await store.take_many(popper, "echo", W, 4)
        assert [t.runs for t in taken] == [1, 1, 3, 1]
        first, ahead = taken[0], [t.payload for t in taken[1:]]
        await _accept(store, "E1", "+15550000005")  # arrived meanwhile: runs after the ones put back
        assert await store.untake("echo", W, [*ahead, "not-there"]) == 3
        assert await store.lrange(keys.inflight(W)) == [first.payload]
        again = await store.take_many(popper, "echo", W, 5)
        assert [envelope.decode(t.payload).message["sid"] for t in again] == ["B1", "C1", "D1", "E1"]
        assert [t.runs for t in again] == [1, 3, 1, 1]
        assert await store.untake("echo", W, []) == 0
    finally:
        await popper.close()


@pytest_twisted.ensureDeferred
async def test_scripts_are_loaded_again_after_script_flush(store: Store) -> None:
    """After SCRIPT FLUSH (or a Redis restart) EVALSHA answers NOSCRIPT and the store falls back to EVAL."""
    await store.accept("echo", "SM1", "a", "p1")
    await store._execute("SCRIPT", "FLUSH")
    assert await store.accept("echo", "SM2", "a", "p2") is None
    assert await store.accept("echo", "SM2", "a", "p2") == "a"
    assert await store.llen(store.keys("echo").queue) == 2


@pytest_twisted.ensureDeferred
async def test_an_error_reply_is_a_redis_reply_error(store: Store) -> None:
    """A script that meets the wrong type of key raises RedisReplyError, not a driver's exception."""
    await store._execute("SET", store.keys("echo").queue, "not a list")
    with pytest.raises(RedisReplyError):
        await store.accept("echo", "SM1", "a", "p")


@pytest_twisted.ensureDeferred
async def test_push_capped_and_lrange_follow_redis_indices(store: Store) -> None:
    """push_capped keeps the newest items; lrange takes Redis's inclusive and negative indices."""
    for i in range(5):
        await store.push_capped("contract:list", f"i{i}", 3)
    assert await store.lrange("contract:list") == ["i4", "i3", "i2"]
    assert await store.lrange("contract:list", 0, 0) == ["i4"]
    assert await store.lrange("contract:list", -2, -1) == ["i3", "i2"]
    assert await store.lrange("contract:list", 5, 9) == []
    assert await store.llen("contract:list") == 3


@pytest_twisted.ensureDeferred
async def test_every_key_carries_the_prefix_and_the_topic_hash_tag(store: Store) -> None:
    """All keys a topic's life touches start with the prefix and the {topic} hash tag (one Cluster slot)."""
    await store.heartbeat(["echo"], W, 60)
    await store.accept("echo", "SM1", "a", _payload("SM1"))
    payload = await _pop(store)
    await store.record_sent("echo", "SM1", 0, "SMout", _reply("SMout", "hi"))
    await store.finish("echo", W, payload or "", "SM1", "{}", "errors", 10, dead=True)
    assert await store.ttl(store.keys("echo").replies("SM1")) > 0
    await store.push_capped(store.keys("echo").outbox, "{}", 10)
    names = [str(n) for n in await store._execute("KEYS", "*")]
    assert names and all(n.startswith("contract:{echo}:") for n in names)


@pytest_twisted.ensureDeferred
async def test_a_stopped_store_raises_redis_unavailable(store: Store) -> None:
    """After stop, every operation raises RedisUnavailable rather than a driver's error."""
    await store.stop()
    with pytest.raises(RedisUnavailable):
        await store.ping()
    with pytest.raises(RedisUnavailable):
        await store.accept("echo", "SM1", "a", "p")


@pytest_twisted.ensureDeferred
async def test_a_script_failing_half_way_loses_no_message(store: Store) -> None:
    """Redis keeps a failed script's earlier writes, so each script adds before it removes: an error loses nothing."""
    keys = store.keys("echo")
    await store._execute("SET", keys.queue, "not a list")
    with pytest.raises(RedisReplyError):
        await store.accept("echo", "SM1", "a", "p1")
    assert await store.answer_for("echo", "SM1") is None  # not remembered: Twilio's retry can still queue it
    await store._execute("DEL", keys.queue)
    await store.accept("echo", "SM1", "a", "p1")
    await _pop(store)
    await store._execute("SET", keys.complete, "in the way")
    with pytest.raises(RedisReplyError):
        await store.finish("echo", W, "p1", "SM1", "record", "complete", 10)
    assert await store.lrange(keys.inflight(W)) == ["p1"]
    await store._execute("SET", keys.queue, "in the way")
    await store._execute("DEL", keys.alive(W))
    with pytest.raises(RedisReplyError):
        await store.reclaim("echo", W)
    assert await store.lrange(keys.inflight(W)) == ["p1"]


@pytest_twisted.ensureDeferred
async def test_pace_queues_sends_behind_each_other_at_the_rate(store: Store) -> None:
    """PACE: a burst of one second's worth goes at once, then each send waits its turn; the bucket refills."""
    waits = [await store.pace("+15005550006", 2.0, 1, 100.0) for _ in range(4)]
    assert waits == [0.0, 0.0, 0.5, 1.0]
    assert await store.pace("+15005550006", 2.0, 1, 103.0) == 0.0  # the debt is paid and the burst back
    assert await store.pace("+15005550007", 2.0, 3, 103.0) == 0.5  # another sender has its own bucket


def _reply(sid: str, body: str | None, media: tuple[str, ...] = ()) -> str:
    return json.dumps({"sid": sid, "to": "+15551234567", "body": body, "media": list(media)})


def _shown(sid: str, body: str | None, status: str | None, media: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"sid": sid, "to": "+15551234567", "body": body, "media": list(media), "status": status}


@pytest_twisted.ensureDeferred
async def test_replies_are_kept_in_order_with_their_status_and_finish_marks_the_message_handled(
        store: Store) -> None:
    """A reply recorded by SENT and those handed to FINISH are read back by send index with their delivery
    status; FINISH marks the message handled on its seen value (whose TTL stays) and gives the replies
    REPLIES_SECONDS of life."""
    keys = store.keys("echo")
    await store.accept("echo", "SM1", "a", "m1")
    assert await store.replies("echo", "SM1") == Replies(False, [])
    assert await _pop(store) == "m1"
    await store.record_sent("echo", "SM1", 0, "SBa", _reply("SBa", "one"))
    await store.record_status("echo", "SBa", "delivered", 3, "", "{}")
    assert await store.replies("echo", "SM1") == Replies(False, [_shown("SBa", "one", "delivered")])
    assert DEDUPE_SECONDS - 5 < await store.ttl(keys.replies("SM1")) <= DEDUPE_SECONDS
    later = {10: _reply("SMc", None, ("https://m.example/c.png",)), 2: _reply("SMb", "two\nlines")}
    assert await store.finish("echo", W, "m1", "SM1", "r", "complete", 10, replies=later)
    assert await store.replies("echo", "SM1") == Replies(True, [
        _shown("SBa", "one", "delivered"), _shown("SMb", "two\nlines", None),
        _shown("SMc", None, None, ("https://m.example/c.png",))])
    assert REPLIES_SECONDS - 5 < await store.ttl(keys.replies("SM1")) <= REPLIES_SECONDS
    assert DEDUPE_SECONDS - 5 < await store.ttl(keys.seen("SM1")) <= DEDUPE_SECONDS
    assert await store.sent("echo", "SM1") == {}
    # Twilio's retry of the webhook still gets the first answer, and the message is not queued again
    prior = await store.accept("echo", "SM1", "a", "m1 again")
    assert prior is not None and read_seen(prior) == ("a", FINISHED)
    assert await store.answer_for("echo", "SM1") == "a"
    assert await store.llen(keys.queue) == 0


@pytest_twisted.ensureDeferred
async def test_a_message_without_replies_is_handled_with_none_and_leaves_no_replies_key(store: Store) -> None:
    """A message finished without sending anything is handled, with no replies and no replies key."""
    await store.accept("echo", "SM1", "k:out", "m1")
    await _pop(store)
    assert await store.replies("echo", "SM1") == Replies(False, [])
    await store.finish("echo", W, "m1", "SM1", "r", "complete", 10)
    assert await store.replies("echo", "SM1") == Replies(True, [])
    assert await store.ttl(store.keys("echo").replies("SM1")) == -2
    assert await store.answer_for("echo", "SM1") == "k:out"


@pytest_twisted.ensureDeferred
async def test_a_dead_letter_is_handled_with_its_error_and_handled_again_when_requeued(store: Store) -> None:
    """A message that ends as a dead letter is handled, with its record's error line; re-queued and completed,
    it is handled without one."""
    await store.accept("echo", "SM1", "a", _payload("SM1"))
    payload = await _pop(store)
    assert payload is not None
    record = json.dumps({"message": {"sid": "SM1"}, "error": "ZeroDivisionError: division by zero"})
    await store.finish("echo", W, payload, "SM1", record, "errors", 10, dead=True,
                       replies={0: _reply("SBa", "partial")})
    assert await store.replies("echo", "SM1") == Replies(
        True, [_shown("SBa", "partial", None)], error="ZeroDivisionError: division by zero")
    seen = store.keys("echo").seen("SM1")
    ttl = await store.ttl(seen)
    await store.requeue_dead("echo")
    # back in the queue it is not handled (its mark is off, its TTL kept) until it finishes again
    assert (await store.replies("echo", "SM1")).handled is False
    assert await store._execute("GET", seen) == "a" and 0 < await store.ttl(seen) <= ttl
    assert await _pop(store) == payload
    await store.finish("echo", W, payload, "SM1", "{}", "complete", 10)
    assert await store.replies("echo", "SM1") == Replies(True, [_shown("SBa", "partial", None)])
    assert await store.answer_for("echo", "SM1") == "a"


@pytest_twisted.ensureDeferred
async def test_a_refused_message_is_handled_at_once_naming_its_validator(store: Store) -> None:
    """A message a validator refused was never queued: handled, no replies, the validator named (even one whose
    name ends like a finish mark)."""
    await store.accept("echo", "SM1", "v:length", None)
    await store.accept("echo", "SM2", "v:shout+", None)
    assert await store.replies("echo", "SM1") == Replies(True, [], refused="length")
    assert await store.replies("echo", "SM2") == Replies(True, [], refused="shout+")
    assert await store.answer_for("echo", "SM2") == "v:shout+"


@pytest_twisted.ensureDeferred
async def test_finish_marks_nothing_without_a_seen_key_or_when_the_message_is_not_held(store: Store) -> None:
    """FINISH creates no seen key where there is none (an on_status run, a MessageSid forgotten after a day),
    and marks nothing when the message was no longer in this worker's in-flight list."""
    keys = store.keys("echo")
    await store.push_capped(keys.queue, "status change", 10)
    await _pop(store)
    await store.finish("echo", W, "status change", "SBout", "r", "statuses", 10)
    assert await store.ttl(keys.seen("SBout")) == -2
    await store.accept("echo", "SM1", "a", "m1")
    assert not await store.finish("echo", W, "m1", "SM1", "late", "complete", 10, replies={0: _reply("SBa", "x")})
    assert await store.replies("echo", "SM1") == Replies(False, [])


@pytest_twisted.ensureDeferred
async def test_finish_many_marks_each_message_handled_with_its_replies(store: Store) -> None:
    """The grouped finish does FINISH's replies work for each message: replies kept, the message marked handled."""
    for sid in ("SM1", "SM2"):
        await store.accept("echo", sid, "a", f"m-{sid}")
    assert await _pop(store) == "m-SM1" and await _pop(store) == "m-SM2"
    done = await store.finish_many("echo", W, [
        Finishing("m-SM1", "SM1", "r1", "complete", 10, replies={0: _reply("SMa", "one")}),
        Finishing("m-SM2", "SM2", "r2", "errors", 10, dead=True),
    ])
    assert done == [True, True]
    assert await store.replies("echo", "SM1") == Replies(True, [_shown("SMa", "one", None)])
    dead = await store.replies("echo", "SM2")
    assert dead.handled and dead.replies == []
    assert 0 < await store.ttl(store.keys("echo").replies("SM1")) <= REPLIES_SECONDS

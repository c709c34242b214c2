"""The Redis queue schema against a real Redis server: atomic accept, in-flight moves, recovery."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from pyrowire.runconfig import parse_redis_url
from pyrowire.store import RedisStore
from tests.redis_server import RedisServer


async def started(redis: RedisServer, prefix: str = "pyrowire") -> RedisStore:
    store = RedisStore(parse_redis_url(redis.url), prefix=prefix)
    store.start()
    for _ in range(200):
        if store.connected:
            break
        await deferLater(reactor, 0.01)
    assert store.connected
    return store


@pytest_twisted.ensureDeferred
async def test_accept_is_atomic_under_concurrent_retries(redis_server: RedisServer) -> None:
    """Fifty concurrent accepts of one MessageSid queue it once; every other caller gets the first answer."""
    store = await started(redis_server)
    try:
        results = await defer.gatherResults([
            defer.Deferred.fromCoroutine(store.accept("echo", "SM1", "a", json.dumps({"n": i})))
            for i in range(50)
        ])
        assert results.count(None) == 1
        assert set(results) == {None, "a"}
        assert await store.llen(store.keys("echo").queue) == 1
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_invalid_answer_is_remembered_without_queueing(redis_server: RedisServer) -> None:
    """An answer recorded without a payload queues nothing and is returned for the same MessageSid."""
    store = await started(redis_server)
    try:
        assert await store.accept("echo", "SM2", "v:profanity", None) is None
        assert await store.accept("echo", "SM2", "a", "payload") == "v:profanity"
        assert await store.llen(store.keys("echo").queue) == 0
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_dedupe_keys_expire_after_a_day(redis_server: RedisServer) -> None:
    """De-duplication keys carry a 24-hour expiry, so they never pile up."""
    store = await started(redis_server)
    try:
        await store.accept("echo", "SM3", "a", "x")
        ttl = await store._run("ttl", store.keys("echo").seen("SM3"))
        assert 86_000 < int(ttl) <= 86_400
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_pop_moves_into_inflight_in_fifo_order(redis_server: RedisServer) -> None:
    """A blocking pop moves the oldest message into this worker's in-flight list, on its own connection."""
    store = await started(redis_server)
    popper = store.popper()
    try:
        keys = store.keys("echo")
        for i in range(3):
            await store.accept("echo", f"SM{i}", "a", f"m{i}")
        assert await popper.pop(keys, "w1", 1) == "m0"
        assert await popper.pop(keys, "w1", 1) == "m1"
        assert await store.lrange(keys.inflight("w1")) == ["m1", "m0"]
        assert await store.lrange(keys.queue) == ["m2"]
    finally:
        await popper.close()
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_parked_pop_does_not_stall_other_commands(redis_server: RedisServer) -> None:
    """While a pop waits on an empty queue, the store's other commands still answer at once."""
    store = await started(redis_server)
    popper = store.popper()
    try:
        keys = store.keys("echo")
        waiting = popper.pop(keys, "w1", 5)
        for _ in range(200):
            if popper.connected:
                break
            await deferLater(reactor, 0.01)
        assert await store.ping()
        await store.accept("echo", "SMlate", "a", "late")
        assert await waiting == "late"
    finally:
        await popper.close()
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_finish_records_and_trims_to_retention(redis_server: RedisServer) -> None:
    """Finishing drops the message from in-flight and keeps only the newest `retention` records."""
    store = await started(redis_server)
    popper = store.popper()
    try:
        keys = store.keys("echo")
        for i in range(5):
            await store.accept("echo", f"SM{i}", "a", f"m{i}")
            moved = await popper.pop(keys, "w1", 1)
            await store.finish("echo", "w1", moved, f"SM{i}", f"record{i}", "complete", 3)
        assert await store.llen(keys.inflight("w1")) == 0
        assert await store.lrange(keys.complete) == ["record4", "record3", "record2"]
    finally:
        await popper.close()
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_reclaim_puts_back_a_dead_workers_messages_first_in_line(redis_server: RedisServer) -> None:
    """A worker whose heartbeat expired has its in-flight messages moved back, oldest first, ahead of the queue."""
    store = await started(redis_server)
    popper = store.popper()
    try:
        keys = store.keys("echo")
        await store.heartbeat(["echo"], "dead", ttl=1)
        for i in range(3):
            await store.accept("echo", f"SM{i}", "a", f"m{i}")
        await popper.pop(keys, "dead", 1)
        await popper.pop(keys, "dead", 1)
        assert await store.reclaim("echo", "dead") == -1  # still alive: left alone
        await store._run("delete", keys.alive("dead"))  # what expiry does after a SIGKILL
        assert await store.workers("echo") == ["dead"]
        assert await store.reclaim("echo", "dead") == 2
        assert await store.workers("echo") == []
        assert await popper.pop(keys, "next", 1) == "m0"
        assert await popper.pop(keys, "next", 1) == "m1"
        assert await popper.pop(keys, "next", 1) == "m2"
    finally:
        await popper.close()
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_keys_share_the_topic_hash_slot_and_prefix(redis_server: RedisServer) -> None:
    """Every key of a topic carries the deployment prefix and the {topic} hash tag."""
    store = await started(redis_server, prefix="acme")
    try:
        await store.accept("echo", "SM1", "a", "m")
        await store.heartbeat(["echo"], "w", ttl=5)
        names = await store._run("keys", "*")
        assert names and all(str(n).startswith("acme:{echo}:") for n in names)
        assert {str(n).split("}")[0] for n in names} == {"acme:{echo"}
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_reclaim_counts_an_interrupted_run_and_requeue_forgets_it(redis_server: RedisServer) -> None:
    """A dead worker's message comes back with one more interrupted run; a re-queued dead letter with none."""
    store = await started(redis_server)
    popper = store.popper()
    try:
        keys = store.keys("echo")
        envelope = {"message": {"sid": "SM1", "message": "h\u00e9llo", "media": {"count": 0, "media": {}},
                                "reply": None}, "received_at": 1764300000.25}
        await store.accept("echo", "SM1", "a", json.dumps(envelope))
        await popper.pop(keys, "dead", 1)
        assert await store.reclaim("echo", "dead") == 1
        back = json.loads(await popper.pop(keys, "next", 1))
        assert back == {**envelope, "attempts": 1}
        await store.finish("echo", "next", json.dumps(back), "SM1", "{}", "errors", 10, dead=True)
        assert await store.requeue_dead("echo") == 1
        assert json.loads(await popper.pop(keys, "next", 1)) == envelope
    finally:
        await popper.close()
        await store.stop()

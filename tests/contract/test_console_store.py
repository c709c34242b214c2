"""The store operations of the console, on the in-memory store and on a real Valkey (see test_store.py)."""

from __future__ import annotations

from pyrowire import envelope
from pyrowire.store import Store
from tests.contract.test_store import store  # noqa: F401  (the fixture: memory and valkey)


def _payload(sid: str, number: str = "+15550001111") -> str:
    return envelope.encode({"sid": sid, "number": number, "message": "hi"}, 1.0)


async def test_requeue_one_letter_moves_it_behind_its_conversation(store: Store) -> None:  # noqa: F811
    k = store.keys("echo")
    first, second, other = _payload("SM1"), _payload("SM2"), _payload("SM3", "+15559990000")
    for p in (first, second, other):
        await store.push_capped(k.dead, p, 100)
    await store._execute("HSET", k.runs, "SM1", 3)
    await store._execute("SET", k.seen("SM1"), "a-", "EX", 100)  # dead-lettered: handled
    # the first sender's conversation is busy: its letter waits behind it; the other goes to the queue
    await store._execute("SADD", k.active, "+15550001111")
    assert await store.requeue_letter("echo", first) is True
    assert await store.requeue_letter("echo", other) is True
    assert await store.lrange(k.conversation("+15550001111")) == [first]
    assert await store.lrange(k.queue) == [other]
    assert await store.lrange(k.dead) == [second]
    assert await store._execute("HGET", k.runs, "SM1") is None
    assert await store._execute("GET", k.seen("SM1")) == "a" and await store.ttl(k.seen("SM1")) > 0
    assert await store.requeue_letter("echo", first) is False  # no longer a dead letter
    assert await store.requeue_letter("echo", second, ordered=False) is True
    assert await store.lrange(k.queue) == [second, other]


async def test_discard_letter_drops_one_copy(store: Store) -> None:  # noqa: F811
    k = store.keys("echo")
    a, b = _payload("SM1"), _payload("SM2")
    for p in (a, b, a):
        await store.push_capped(k.dead, p, 100)
    assert await store.discard_letter("echo", a) is True
    assert await store.lrange(k.dead) == [b, a]
    assert await store.discard_letter("echo", "not a letter") is False


async def test_tally_keeps_an_hour_of_minutes(store: Store) -> None:  # noqa: F811
    await store.tally("echo", 1000, 2)
    await store.tally("echo", 1000, 3)
    await store.tally("echo", 1030, 1)
    assert await store.handled_minutes("echo") == {1000: 5, 1030: 1}
    await store.tally("echo", 1060, 7)  # minute 1000 is now out of the last 60
    assert await store.handled_minutes("echo") == {1030: 1, 1060: 7}
    assert 0 < await store.ttl(store.keys("echo").minutes) <= 7200


async def test_status_counts_each_status_a_message_reaches_once(store: Store) -> None:  # noqa: F811
    for sid, status, rank in (("SM1", "sent", 2), ("SM1", "sent", 2), ("SM1", "delivered", 3), ("SM2", "sent", 2),
                              ("SM2", "queued", 0), ("SM2", "failed", 3)):
        await store.record_status("echo", sid, status, rank, "", "{}")
    assert await store.delivered("echo") == {"sent": 2, "delivered": 1, "failed": 1}
    assert await store.delivery_status("echo", "SM1") == "delivered"
    assert await store.delivery_status("echo", "SM9") is None


async def test_opted_out_sample_is_bounded(store: Store) -> None:  # noqa: F811
    for i in range(30):
        await store.opt_out("echo", f"+1555000{i:04d}")
    total, numbers = await store.opted_out_sample("echo", limit=10)
    assert total == 30 and 10 <= len(numbers) <= 10
    assert await store.scheduled("echo") == 0

"""Metrics: names and labels in the exposition, bounded labels, depths read from the store."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pyrowire.metrics import HANDLER_BUCKETS, Metrics
from pyrowire.testing.memory import MemoryStore
from tests.deferreds import result_of

T = TypeVar("T")
W1 = "host:1:aaaa"
W2 = "host:2:bbbb"


def run(coro: Coroutine[Any, Any, T] | Deferred[T]) -> T:
    """The result of an in-memory store call, which finishes without waiting."""
    d = coro if isinstance(coro, Deferred) else Deferred.fromCoroutine(coro)
    return result_of(d)  # type: ignore[no-any-return]


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``metrics.render()``, by sample name and label set."""
    text, _ = metrics.render()
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for s in family.samples:
            found[s.name, frozenset(s.labels.items())] = s.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the series is absent."""
    return samples(metrics).get((name, frozenset(labels.items())))


def series(metrics: Metrics, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called ``name``."""
    return [dict(labels) for (n, labels) in samples(metrics) if n == name]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock, prefix="test")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(["echo", "poll"])


def queue(store: MemoryStore, topic: str, sid: str) -> None:
    """Accept one message of ``topic`` onto its queue."""
    run(Deferred.fromCoroutine(store.accept(topic, sid, "a", f'{{"sid": "{sid}"}}')))


def test_render_returns_the_text_format_and_its_content_type(metrics: Metrics) -> None:
    """render() answers the exposition bytes and prometheus_client's latest text Content-Type."""
    text, content_type = metrics.render()
    assert isinstance(text, bytes)
    assert content_type == CONTENT_TYPE_LATEST
    assert b"# TYPE pyrowire_webhooks_total counter" in text


def test_webhook_counts_by_topic_and_outcome(metrics: Metrics) -> None:
    """webhook() shows up as pyrowire_webhooks_total{topic,outcome}."""
    metrics.webhook("echo", "queued")
    metrics.webhook("echo", "queued")
    metrics.webhook("echo", "duplicate")
    assert value(metrics, "pyrowire_webhooks_total", topic="echo", outcome="queued") == 2
    assert value(metrics, "pyrowire_webhooks_total", topic="echo", outcome="duplicate") == 1
    assert value(metrics, "pyrowire_webhooks_total", topic="poll", outcome="queued") == 0


def test_configured_topics_start_at_zero(metrics: Metrics) -> None:
    """Every outcome of a configured topic is exposed at 0 before its first event, so rate() sees it."""
    outcomes = {s["outcome"] for s in series(metrics, "pyrowire_webhooks_total") if s["topic"] == "poll"}
    assert outcomes == {"queued", "invalid", "duplicate", "redis_down", "bad_request", "forbidden", "too_large",
                        "opt_out", "opt_in", "help"}
    sends = {s["outcome"] for s in series(metrics, "pyrowire_twilio_sends_total") if s["topic"] == "poll"}
    assert sends == {"sent", "sandbox", "retry", "failed", "suppressed"}


def test_unknown_topics_share_one_empty_label(metrics: Metrics) -> None:
    """Any number of unconfigured topic names adds no series: they all count under topic=""."""
    before = len(samples(metrics))
    for i in range(500):
        metrics.webhook(f"random-{i}", "unknown_topic")
    assert len(samples(metrics)) == before
    assert value(metrics, "pyrowire_webhooks_total", topic="", outcome="unknown_topic") == 500
    assert not [s for s in series(metrics, "pyrowire_webhooks_total") if s["topic"].startswith("random")]


def test_unknown_topics_are_not_cached_one_by_one(metrics: Metrics) -> None:
    """The hot-path caches hold configured topics and "" only, however many names are tried."""
    for i in range(100):
        metrics.webhook(f"x{i}", "unknown_topic")
        metrics.handled(f"x{i}", "complete", 0.01)
        metrics.twilio_send(f"x{i}", "sent")
    caches = (metrics._webhooks, metrics._handled, metrics._sends)
    assert all({topic for topic, _ in cache} <= {"echo", "poll", ""} for cache in caches)
    assert set(metrics._seconds) <= {"echo", "poll", ""}


def test_an_outcome_outside_the_fixed_set_is_refused(metrics: Metrics) -> None:
    """An outcome that is not one of the documented ones raises ValueError and counts nothing."""
    with pytest.raises(ValueError):
        metrics.webhook("echo", "whatever")
    with pytest.raises(ValueError):
        metrics.handled("echo", "finished", 1.0)
    with pytest.raises(ValueError):
        metrics.twilio_send("echo", "queued")
    assert value(metrics, "pyrowire_handler_seconds_count", topic="echo") == 0
    assert all(s["outcome"] != "whatever" for s in series(metrics, "pyrowire_webhooks_total"))


def test_handled_counts_outcomes_and_observes_seconds(metrics: Metrics) -> None:
    """handled() feeds pyrowire_handled_total{topic,outcome} and the pyrowire_handler_seconds{topic} histogram."""
    metrics.handled("echo", "complete", 0.002)
    metrics.handled("echo", "retry", 3.0)
    metrics.handled("echo", "dead", 90.0)
    assert value(metrics, "pyrowire_handled_total", topic="echo", outcome="complete") == 1
    assert value(metrics, "pyrowire_handled_total", topic="echo", outcome="retry") == 1
    assert value(metrics, "pyrowire_handled_total", topic="echo", outcome="dead") == 1
    assert value(metrics, "pyrowire_handler_seconds_count", topic="echo") == 3
    assert value(metrics, "pyrowire_handler_seconds_sum", topic="echo") == pytest.approx(93.002)
    assert value(metrics, "pyrowire_handler_seconds_bucket", topic="echo", le="0.0025") == 1
    assert value(metrics, "pyrowire_handler_seconds_bucket", topic="echo", le="5.0") == 2
    assert value(metrics, "pyrowire_handler_seconds_bucket", topic="echo", le="60.0") == 2
    assert value(metrics, "pyrowire_handler_seconds_bucket", topic="echo", le="+Inf") == 3


def test_handler_buckets_run_from_a_millisecond_to_a_minute(metrics: Metrics) -> None:
    """The histogram's buckets are HANDLER_BUCKETS, 1 ms to 60 s, plus +Inf."""
    les = {s["le"] for s in series(metrics, "pyrowire_handler_seconds_bucket") if s["topic"] == "poll"}
    assert les == {str(float(b)) for b in HANDLER_BUCKETS} | {"+Inf"}
    assert HANDLER_BUCKETS[0] == 0.001 and HANDLER_BUCKETS[-1] == 60.0


def test_twilio_send_counts_by_topic_and_outcome(metrics: Metrics) -> None:
    """twilio_send() shows up as pyrowire_twilio_sends_total{topic,outcome}."""
    for outcome in ("sent", "sandbox", "retry", "retry", "failed"):
        metrics.twilio_send("poll", outcome)
    assert value(metrics, "pyrowire_twilio_sends_total", topic="poll", outcome="sent") == 1
    assert value(metrics, "pyrowire_twilio_sends_total", topic="poll", outcome="sandbox") == 1
    assert value(metrics, "pyrowire_twilio_sends_total", topic="poll", outcome="retry") == 2
    assert value(metrics, "pyrowire_twilio_sends_total", topic="poll", outcome="failed") == 1


def test_two_instances_do_not_share_counts() -> None:
    """Each Metrics has its own registry: counting on one leaves the other at 0, and neither clashes."""
    a, b = Metrics(["echo"]), Metrics(["echo"])
    a.webhook("echo", "queued")
    a.handled("echo", "complete", 0.5)
    assert value(a, "pyrowire_webhooks_total", topic="echo", outcome="queued") == 1
    assert value(b, "pyrowire_webhooks_total", topic="echo", outcome="queued") == 0
    assert value(b, "pyrowire_handler_seconds_count", topic="echo") == 0
    assert a.registry is not b.registry


def test_refresh_depths_reads_queued_in_flight_and_dead(metrics: Metrics, store: MemoryStore) -> None:
    """refresh_depths() sets pyrowire_queue_depth{topic,state}, summing in-flight over registered workers."""
    for i in range(5):
        queue(store, "echo", f"SM{i}")
    keys = store.keys("echo")
    run(store.heartbeat(["echo"], W1, 15))
    run(store.heartbeat(["echo"], W2, 15))
    run(store.popper().pop(keys, W1, 1))
    run(store.popper().pop(keys, W2, 1))
    payload = run(store.popper().pop(keys, W2, 1))
    assert payload is not None
    run(store.finish("echo", W2, payload, "SM2", "{}", "errors", 10, dead=True))
    run(Deferred.fromCoroutine(metrics.refresh_depths(store, ["echo", "poll"])))
    assert value(metrics, "pyrowire_queue_depth", topic="echo", state="queued") == 2
    assert value(metrics, "pyrowire_queue_depth", topic="echo", state="in_flight") == 2
    assert value(metrics, "pyrowire_queue_depth", topic="echo", state="dead") == 1
    assert value(metrics, "pyrowire_queue_depth", topic="poll", state="queued") == 0
    assert value(metrics, "pyrowire_redis_up") == 1


def test_refresh_depths_defaults_to_every_configured_topic(metrics: Metrics, store: MemoryStore) -> None:
    """Without a topic list, refresh_depths() reads every topic the Metrics was made for."""
    queue(store, "poll", "SM1")
    run(Deferred.fromCoroutine(metrics.refresh_depths(store)))
    assert {s["topic"] for s in series(metrics, "pyrowire_queue_depth")} == {"echo", "poll"}
    assert value(metrics, "pyrowire_queue_depth", topic="poll", state="queued") == 1


def test_refresh_depths_refuses_an_unconfigured_topic(metrics: Metrics, store: MemoryStore) -> None:
    """Asking for the depth of a topic that is not configured is a ValueError, not a new series."""
    with pytest.raises(ValueError):
        run(Deferred.fromCoroutine(metrics.refresh_depths(store, ["nope"])))
    assert series(metrics, "pyrowire_queue_depth") == []


def test_redis_down_keeps_the_last_depths_and_reports_down(metrics: Metrics, store: MemoryStore) -> None:
    """When the store raises RedisUnavailable, the depths keep their last values and pyrowire_redis_up is 0."""
    queue(store, "echo", "SM1")
    run(Deferred.fromCoroutine(metrics.refresh_depths(store, ["echo"])))
    store.down = True
    run(Deferred.fromCoroutine(metrics.refresh_depths(store, ["echo"])))
    assert value(metrics, "pyrowire_redis_up") == 0
    assert value(metrics, "pyrowire_queue_depth", topic="echo", state="queued") == 1
    store.down = False
    queue(store, "echo", "SM2")
    run(Deferred.fromCoroutine(metrics.refresh_depths(store, ["echo"])))
    assert value(metrics, "pyrowire_redis_up") == 1
    assert value(metrics, "pyrowire_queue_depth", topic="echo", state="queued") == 2


class LostAfterWorkers(MemoryStore):
    """A store whose Redis goes away once the worker list has been read."""

    lose = False

    async def workers(self, topic: str) -> list[str]:
        found = await super().workers(topic)
        if self.lose:
            self.down = True
        return found


def test_redis_lost_part_way_changes_no_depth(clock: Clock, metrics: Metrics) -> None:
    """A refresh that fails after some answers sets none of them: the gauges stay one consistent snapshot."""
    store = LostAfterWorkers(clock)
    queue(store, "echo", "SM1")
    run(store.heartbeat(["echo"], W1, 15))
    run(Deferred.fromCoroutine(metrics.refresh_depths(store, ["echo"])))
    queue(store, "echo", "SM2")
    store.lose = True
    run(Deferred.fromCoroutine(metrics.refresh_depths(store, ["echo"])))
    assert value(metrics, "pyrowire_redis_up") == 0
    assert value(metrics, "pyrowire_queue_depth", topic="echo", state="queued") == 1


def test_nothing_secret_or_request_made_is_labelled(metrics: Metrics, store: MemoryStore) -> None:
    """The exposition has only topic, outcome, state and le labels; no URL or key names appear."""
    metrics.webhook("https://evil.example/?token=abc", "unknown_topic")
    run(Deferred.fromCoroutine(metrics.refresh_depths(store)))
    text, _ = metrics.render()
    names = {k for (_, labels) in samples(metrics) for k, _ in labels}
    assert names <= {"topic", "outcome", "state", "le"}
    assert b"token" not in text and b"test:" not in text and b"://" not in text

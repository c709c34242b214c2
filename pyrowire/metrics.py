"""Prometheus metrics of one pyrowire service, in a registry of its own.

Each :class:`Metrics` holds its own ``CollectorRegistry``, never the process-wide
default one, so two apps, two services or two tests in one process never share
or collide on a count. Label values are bounded: a topic that is not one of the
configured topics is counted under ``topic=""`` (no configured topic can be
called that), so random names in webhook URLs cannot grow the number of series,
and an outcome or state outside the fixed sets below is a programming error
(``ValueError``). No label carries a URL, a token or a password.

The counting methods are meant for hot paths: the labelled children are cached
in dicts keyed by ``(topic, outcome)``, so one count is a dict lookup and an
``inc()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pyrowire.errors import RedisUnavailable

# the topic label of anything counted for a topic that is not configured
UNKNOWN_TOPIC = ""

WEBHOOK_OUTCOMES = frozenset(
    {"queued", "invalid", "duplicate", "redis_down", "bad_request", "forbidden", "too_large", "unknown_topic",
     "opt_out", "opt_in", "help"}
)
HANDLED_OUTCOMES = frozenset({"complete", "retry", "dead"})
SEND_OUTCOMES = frozenset({"sent", "sandbox", "retry", "failed", "suppressed"})
DEPTH_STATES = ("queued", "in_flight", "dead")
DELIVERY_STATUSES = frozenset({"accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered",
                               "failed", "canceled", "read"})

# seconds, from a quick reply to a handler that waits on slow services
HANDLER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class DepthStore(Protocol):
    """What :meth:`Metrics.refresh_depths` needs of a store (RedisStore and MemoryStore both fit)."""

    async def depths(self, topic: str) -> Mapping[str, int]: ...


class Metrics:
    """The counters, histogram and gauges of one service, for the configured ``topics``."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics: frozenset[str] = frozenset(topics)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._webhooks_total = Counter(
            "pyrowire_webhooks_total", "Webhook requests answered, by topic and outcome.",
            ("topic", "outcome"), registry=r,
        )
        self._handler_seconds = Histogram(
            "pyrowire_handler_seconds", "Seconds one run of a topic's handler took.",
            ("topic",), buckets=HANDLER_BUCKETS, registry=r,
        )
        self._handled_total = Counter(
            "pyrowire_handled_total", "Handler runs, by topic and outcome (complete, retry, dead).",
            ("topic", "outcome"), registry=r,
        )
        self._twilio_sends_total = Counter(
            "pyrowire_twilio_sends_total", "Outbound message attempts, by topic and outcome.",
            ("topic", "outcome"), registry=r,
        )
        self._segments_total = Counter(
            "pyrowire_twilio_segments_total", "SMS segments of the texts sent (or recorded by the sandbox), by topic.",
            ("topic",), registry=r,
        )
        self._delivery_total = Counter(
            "pyrowire_delivery_total", "Changes of an outbound message's delivery status, by topic and new status.",
            ("topic", "status"), registry=r,
        )
        self._pacing = Gauge(
            "pyrowire_pacing_waiting", "Sends waiting for their turn at a paced sender (twilio.mps), in this process.",
            ("sender",), registry=r,
        )
        self._queue_depth = Gauge(
            "pyrowire_queue_depth", "Messages per topic queued, in flight and dead, as of the last refresh.",
            ("topic", "state"), registry=r,
        )
        self._http_timeouts = Counter(
            "pyrowire_http_timeouts_total",
            "HTTP connections closed because the client did not finish a request in time.", registry=r,
        )
        self._redis_up = Gauge(
            "pyrowire_redis_up", "1 when Redis answered the last depth refresh, 0 when it did not.", registry=r,
        )
        self._webhooks: dict[tuple[str, str], Counter] = {}
        self._handled: dict[tuple[str, str], Counter] = {}
        # messages finished (complete or dead) per topic since take_finished() last took them
        self._finished: dict[str, int] = {}
        self._sends: dict[tuple[str, str], Counter] = {}
        self._seconds: dict[str, Histogram] = {}
        self._segments: dict[str, Counter] = {}
        self._depths: dict[tuple[str, str], Gauge] = {}
        # every series of a configured topic exists from the start, at 0, so rate() sees the first event
        for topic in self.topics:
            for outcome in WEBHOOK_OUTCOMES - {"unknown_topic"}:
                self._child(self._webhooks, self._webhooks_total, WEBHOOK_OUTCOMES, topic, outcome)
            for outcome in HANDLED_OUTCOMES:
                self._child(self._handled, self._handled_total, HANDLED_OUTCOMES, topic, outcome)
            for outcome in SEND_OUTCOMES:
                self._child(self._sends, self._twilio_sends_total, SEND_OUTCOMES, topic, outcome)
            self._seconds[topic] = self._handler_seconds.labels(topic)
            self._segments[topic] = self._segments_total.labels(topic)
        self._child(self._webhooks, self._webhooks_total, WEBHOOK_OUTCOMES, UNKNOWN_TOPIC, "unknown_topic")

    def __repr__(self) -> str:
        return f"<Metrics topics={sorted(self.topics)}>"

    # --- counting ------------------------------------------------------------

    def webhook(self, topic: str, outcome: str) -> None:
        """Count one webhook request of ``topic`` answered with ``outcome``."""
        child = self._webhooks.get((topic, outcome))
        if child is None:
            child = self._child(self._webhooks, self._webhooks_total, WEBHOOK_OUTCOMES, topic, outcome)
        child.inc()

    def handled(self, topic: str, outcome: str, seconds: float) -> None:
        """Count one handler run of ``topic`` that ended in ``outcome`` after ``seconds``."""
        child = self._handled.get((topic, outcome))
        if child is None:
            child = self._child(self._handled, self._handled_total, HANDLED_OUTCOMES, topic, outcome)
        child.inc()
        if outcome != "retry":
            self._finished[topic] = self._finished.get(topic, 0) + 1
        histogram = self._seconds.get(topic)
        if histogram is None:
            name = self._topic(topic)
            histogram = self._seconds.get(name)
            if histogram is None:
                histogram = self._seconds[name] = self._handler_seconds.labels(name)
        histogram.observe(seconds)

    def take_finished(self) -> dict[str, int]:
        """The messages finished per topic since the last call (the supervisor adds them to Redis's tally)."""
        finished, self._finished = self._finished, {}
        return finished

    def handled_later(self, topic: str, count: int) -> None:
        """Give back finished counts that could not be stored, to be taken again."""
        self._finished[topic] = self._finished.get(topic, 0) + count

    def twilio_send(self, topic: str, outcome: str) -> None:
        """Count one outbound attempt for ``topic``: sent, sandbox, retry or failed."""
        child = self._sends.get((topic, outcome))
        if child is None:
            child = self._child(self._sends, self._twilio_sends_total, SEND_OUTCOMES, topic, outcome)
        child.inc()

    def segments(self, topic: str, count: int) -> None:
        """Count the SMS segments of one text sent for ``topic``."""
        child = self._segments.get(topic)
        if child is None:
            name = self._topic(topic)
            child = self._segments.get(name)
            if child is None:
                child = self._segments[name] = self._segments_total.labels(name)
        child.inc(count)

    def delivery(self, topic: str, status: str) -> None:
        """Count one outbound message of ``topic`` whose status moved to ``status``."""
        self._delivery_total.labels(self._topic(topic), status if status in DELIVERY_STATUSES else "other").inc()

    def pacing(self, sender: str, change: int) -> None:
        """One more (+1) or one fewer (-1) send waiting for ``sender``'s pace."""
        self._pacing.labels(sender).inc(change)

    def http_timeout(self) -> None:
        """Count one HTTP client disconnected for not finishing its request in time."""
        self._http_timeouts.inc()

    def _topic(self, topic: str) -> str:
        return topic if topic in self.topics else UNKNOWN_TOPIC

    def _child(self, cache: dict[tuple[str, str], Counter], counter: Counter, allowed: frozenset[str],
               topic: str, outcome: str) -> Counter:
        """The cached child of ``counter``; only configured topics (and ``""``) are ever cached."""
        if outcome not in allowed:
            raise ValueError(f"{outcome!r} is not one of {sorted(allowed)}")
        key = (self._topic(topic), outcome)
        child = cache.get(key)
        if child is None:
            child = cache[key] = counter.labels(*key)
        return child

    # --- queue depths ----------------------------------------------------------

    async def refresh_depths(self, store: DepthStore, topics: Sequence[str] | None = None) -> None:
        """Read the queued, in-flight and dead counts of ``topics`` (default: all configured) from ``store``.

        In flight is the sum over the workers registered for the topic, live or not
        yet reclaimed. When the store raises RedisUnavailable part-way, no gauge
        changes but ``pyrowire_redis_up``, which goes to 0; it is 1 after a full answer.
        """
        names = sorted(self.topics) if topics is None else topics
        found: dict[tuple[str, str], int] = {}
        try:
            for topic in names:
                if topic not in self.topics:
                    raise ValueError(f"{topic!r} is not a configured topic")
                for state, count in (await store.depths(topic)).items():
                    found[topic, state] = count
        except RedisUnavailable:
            self._redis_up.set(0)
            return
        for key, value in found.items():
            gauge = self._depths.get(key)
            if gauge is None:
                gauge = self._depths[key] = self._queue_depth.labels(*key)
            gauge.set(value)
        self._redis_up.set(1)

    # --- exposition --------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and the Content-Type to serve it with."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

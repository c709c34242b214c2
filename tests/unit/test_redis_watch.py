"""RedisWatch on a task.Clock: one line when Redis goes, a reminder every 30 s, one line when back; no chatter."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace
from typing import Any

import pytest
import txredisapi
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent
from twisted.python import log as legacy_log

from pyrowire import redis_watch
from pyrowire.errors import RedisUnavailable
from pyrowire.logs import LogConfig, Observer
from pyrowire.redis_watch import REMINDER_SECONDS, RedisWatch

WHERE = "redis://127.0.0.1:6379/0"


class Connection:
    """Stands in for a store's ``connected``: up until told otherwise."""

    def __init__(self) -> None:
        self.up = True

    def __call__(self) -> bool:
        return self.up


class Service:
    """Stands in for the ClientService of one connection of a txredisapi pool."""


def pool_of(service: Service) -> Any:
    """A txredisapi pool shaped just enough for quiet(): its factory's slots and their services."""
    return SimpleNamespace(_factory=SimpleNamespace(slots=[SimpleNamespace(service=service)]))


def lines(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(level, text) of each captured event from the watch."""
    return [(e["log_level"].name, formatEvent(e)) for e in events if e.get("log_namespace", "").endswith("RedisWatch")]


@pytest.mark.expect_logged_errors  # an outage is logged as an error, as it should be
def test_an_outage_is_one_line_down_reminders_every_30_s_and_one_line_back() -> None:
    """Down for 75 s: one error when it goes, reminders at 30 and 60 s, one info line when it is back."""
    clock, connection = Clock(), Connection()
    with capturedLogs() as events:
        watch = RedisWatch(connection, clock, WHERE, "the webhook answers error_response").start()
        clock.advance(5)
        assert lines(events) == []
        connection.up = False
        clock.pump([1.0] * 75)
        connection.up = True
        clock.pump([1.0] * 3)
        watch.stop()
    said = lines(events)
    assert said == [
        ("error",
         f"Redis at {WHERE} is unreachable: the webhook answers error_response; reconnecting in the background"),
        ("error", f"Redis at {WHERE} still unreachable after 30 s: the webhook answers error_response"),
        ("error", f"Redis at {WHERE} still unreachable after 60 s: the webhook answers error_response"),
        ("info", f"Redis at {WHERE} is back after 75 s"),
    ]


@pytest.mark.expect_logged_errors  # an outage is logged as an error, as it should be
def test_a_second_outage_is_said_again_and_a_stopped_watch_says_nothing() -> None:
    """Each outage gets its own line; after stop() nothing is checked or said."""
    clock, connection = Clock(), Connection()
    with capturedLogs() as events:
        watch = RedisWatch(connection, clock, WHERE, "x", reminder=REMINDER_SECONDS).start()
        for _ in range(2):
            connection.up = False
            clock.advance(1)
            connection.up = True
            clock.advance(1)
        watch.stop()
        connection.up = False
        clock.advance(100)
    assert [level for level, _ in lines(events)] == ["error", "info", "error", "info"]
    assert clock.getDelayedCalls() == []


def test_affected_says_what_each_role_stops() -> None:
    """The down line names the webhook for web, the topics' workers for worker, and /health when listening."""
    assert redis_watch.affected("web", ("echo",), True) == (
        "the webhook answers each topic's error_response; /health answers 503")
    assert redis_watch.affected("worker", ("echo", "joke"), False) == (
        "the workers of echo, joke wait (accepted messages stay in Redis)")
    assert "webhook" in redis_watch.affected("all", ("echo",), True)


def test_explains_connection_errors_only() -> None:
    """Lost connections, timeouts and RedisUnavailable are an outage's; anything else is an error of its own."""
    assert redis_watch.explains(RedisUnavailable("away"))
    assert redis_watch.explains(txredisapi.ConnectionError("Lost connection"))
    assert redis_watch.explains(txredisapi.TimeoutError("no reply"))
    assert not redis_watch.explains(txredisapi.ResponseError("WRONGTYPE"))
    assert not redis_watch.explains(ValueError("bad"))


def test_a_quiet_pools_retries_and_txredisapis_lost_connection_lines_are_chatter() -> None:
    """Events from a quiet pool's connection services and txredisapi's lost-connection lines are chatter;
    other events, including a bad database index, are not."""
    service, other = Service(), Service()
    pool = pool_of(service)
    assert redis_watch.quiet(pool) is pool
    retry = {"log_source": service, "log_format": "Scheduling retry {attempt} to connect {endpoint} in {delay} s."}
    assert redis_watch.is_chatter(retry)
    assert not redis_watch.is_chatter({**retry, "log_source": other})
    assert not redis_watch.is_chatter({"log_source": {"unhashable": True}})
    for text in ("Discarding dead connection.", "Redis error: could not set dbid=0: Lost connection"):
        assert redis_watch.is_chatter({"log_namespace": "log_legacy", "log_text": text, "message": (text,)})
    for text in ("Redis error: could not set dbid=99: ERR DB index is out of range", "Redis error: could not auth: x"):
        assert not redis_watch.is_chatter({"log_namespace": "log_legacy", "log_text": text, "message": (text,)})


def test_pyrowires_observer_drops_the_chatter() -> None:
    """The log observer of twistd pyrowire writes nothing for chatter, even at debug level, and the rest as usual."""
    out = io.StringIO()
    observer = Observer(out, LogConfig(logging.DEBUG, "text"))
    service = Service()
    redis_watch.quiet(pool_of(service))
    Logger(namespace="twisted.application._client_service.ClientService", source=service, observer=observer).info(
        "Scheduling retry {attempt} to connect {endpoint} in {delay} seconds.", attempt=3, endpoint="e", delay=1.0)
    legacy_log.addObserver(observer)
    try:
        legacy_log.msg("Discarding dead connection.")
    finally:
        legacy_log.removeObserver(observer)
    Logger(namespace="pyrowire.worker.TopicWorker", observer=observer).emit(LogLevel.info, "kept")
    assert out.getvalue().splitlines()[-1].endswith("kept")
    assert len(out.getvalue().splitlines()) == 1

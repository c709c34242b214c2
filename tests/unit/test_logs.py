"""The log observer: level filtering, readable text lines and JSON lines with structured fields."""

from __future__ import annotations

import io
import json
import logging

import pytest
from twisted.logger import Logger, LogLevel

from pyrowire.errors import ConfigurationError
from pyrowire.logs import LogConfig, Observer, config_for
from pyrowire.settings import Profile


def emit(observer: Observer, level: LogLevel, fmt: str, **fields: object) -> None:
    Logger(namespace="pyrowire.worker.TopicWorker", observer=observer).emit(level, fmt, **fields)


def test_text_lines_are_readable_and_filtered_by_level() -> None:
    """Text format writes one line per event at or above the level, with the formatted message."""
    out = io.StringIO()
    observer = Observer(out, LogConfig(logging.INFO, "text"))
    emit(observer, LogLevel.debug, "hidden {sid}", sid="SM0")
    emit(observer, LogLevel.info, "{topic} {sid} {outcome} in {duration:.3f}s", topic="echo", sid="SM1",
         outcome="complete", duration=0.0123)
    [line] = out.getvalue().splitlines()
    assert line.endswith("info  [worker.TopicWorker] echo SM1 complete in 0.012s")


def test_json_lines_carry_structured_fields() -> None:
    """JSON format writes one object per line with the message and the event's own fields."""
    out = io.StringIO()
    observer = Observer(out, LogConfig(logging.DEBUG, "json"))
    emit(observer, LogLevel.warn, "{topic} {sid} {outcome}", topic="echo", sid="SM1", outcome="dead")
    record = json.loads(out.getvalue())
    assert record["level"] == "warn"
    assert record["message"] == "echo SM1 dead"
    assert (record["topic"], record["sid"], record["outcome"]) == ("echo", "SM1", "dead")
    assert record["logger"] == "worker.TopicWorker"


def test_failures_carry_their_traceback() -> None:
    """A logged failure keeps its traceback in text and in JSON."""
    out = io.StringIO()
    log = Logger(namespace="pyrowire.x", observer=Observer(out, LogConfig(logging.INFO, "json")))
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("handler failed for {sid}", sid="SM9")
    record = json.loads(out.getvalue())
    assert record["error"] == "boom" and "ValueError" in record["traceback"]


def test_profile_and_environment_choose_level_and_format() -> None:
    """A debug profile logs text, others JSON; PYROWIRE_LOG_LEVEL/FORMAT override the profile."""
    assert config_for(Profile("dev", debug=True, log_level=logging.DEBUG), {}) == LogConfig(logging.DEBUG, "text")
    assert config_for(Profile("prod", log_level=logging.ERROR), {}) == LogConfig(logging.ERROR, "json")
    env = {"PYROWIRE_LOG_LEVEL": "warn", "PYROWIRE_LOG_FORMAT": "text"}
    assert config_for(Profile("prod"), env) == LogConfig(logging.WARNING, "text")
    with pytest.raises(ConfigurationError) as info:
        config_for(Profile("prod"), {"PYROWIRE_LOG_FORMAT": "xml"})
    assert info.value.option == "PYROWIRE_LOG_FORMAT"

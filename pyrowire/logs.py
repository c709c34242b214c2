"""How a pyrowire process writes its log: readable one-line events, or JSON lines, above a level.

Events are ``twisted.logger`` events with structured fields (topic, sid, outcome,
duration...). The observer here renders them: ``text`` (one readable line each,
the default of a debug profile) or ``json`` (one JSON object per line, for log
pipelines; the default otherwise). The level comes from the profile's
``log_level`` (Python ``logging`` numbers), the format from its ``log_format``;
``PYROWIRE_LOG_LEVEL`` and ``PYROWIRE_LOG_FORMAT`` in the environment beat both.

Under ``twistd``, ``pyrowire.tap`` installs :func:`twistd_observer` as twistd's
``--logger`` unless one was given, and passes the profile through :func:`configure`
(``makeService`` runs before twistd starts logging).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

from pyrowire.errors import ConfigurationError
from pyrowire.redis_watch import is_chatter
from pyrowire.settings import Profile

_PRIORITY = {LogLevel.debug: 10, LogLevel.info: 20, LogLevel.warn: 30, LogLevel.error: 40, LogLevel.critical: 50}
_NAMES = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "critical": 50}
# fields of an event that are twisted.logger's own, not the event's data
_OWN = frozenset({"format", "log_logger", "log_source", "log_format", "log_level", "log_namespace", "log_time",
                  "log_failure", "log_text", "log_io", "log_trace", "log_legacy", "message", "isError", "system",
                  "time", "printed", "log_system", "why", "failure"})


@dataclass
class LogConfig:
    """What the observer writes: events at or above ``level`` (a logging number), as ``format``."""

    level: int = logging.INFO
    format: str = "text"


#: The configuration twistd's observer reads; set by configure() before logging starts.
current = LogConfig()


def config_for(profile: Profile, environ: Mapping[str, str]) -> LogConfig:
    """The log level and format of a profile, with the environment's overrides."""
    level = profile.log_level
    if environ.get("PYROWIRE_LOG_LEVEL"):
        name = environ["PYROWIRE_LOG_LEVEL"].lower()
        if name not in _NAMES:
            raise ConfigurationError("PYROWIRE_LOG_LEVEL", f"unknown level {name!r} (debug, info, warn, error)")
        level = _NAMES[name]
    fmt = environ.get("PYROWIRE_LOG_FORMAT") or profile.log_format or ("text" if profile.debug else "json")
    if fmt not in ("text", "json"):
        raise ConfigurationError("PYROWIRE_LOG_FORMAT", f"must be text or json, not {fmt!r}")
    return LogConfig(level, fmt)


def enabled(level: int) -> bool:
    """Whether events at ``level`` (a logging number) are written: per-message events check it first."""
    return level >= current.level


def configure(config: LogConfig) -> None:
    current.level, current.format = config.level, config.format


def _stamp(event: Mapping[str, Any]) -> str:
    t = event.get("log_time") or time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@implementer(ILogObserver)
class Observer:
    """Writes events at or above the configured level to ``stream``, as text or JSON lines."""

    def __init__(self, stream: IO[str], config: LogConfig | None = None) -> None:
        self.stream = stream
        self.config = config if config is not None else current

    def __call__(self, event: Mapping[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        if _PRIORITY.get(level, 20) < self.config.level or is_chatter(event):
            return  # a Redis connection's retries are summarised by pyrowire.redis_watch
        try:
            line = self.json(event) if self.config.format == "json" else self.text(event)
            self.stream.write(line + "\n")
            self.stream.flush()
        except Exception:  # a log observer must never raise into the publisher
            pass

    @staticmethod
    def _namespace(event: Mapping[str, Any]) -> str:
        namespace = str(event.get("log_namespace") or event.get("system") or "-")
        return namespace.removeprefix("pyrowire.")

    def text(self, event: Mapping[str, Any]) -> str:
        level = event.get("log_level", LogLevel.info).name
        line = f"{_stamp(event)} {level:<5} [{self._namespace(event)}] {formatEvent(dict(event))}"
        failure = event.get("log_failure")
        if failure is not None:
            line += "\n" + failure.getTraceback().rstrip()
        return line

    def json(self, event: Mapping[str, Any]) -> str:
        record: dict[str, Any] = {
            "time": _stamp(event),
            "level": event.get("log_level", LogLevel.info).name,
            "logger": self._namespace(event),
            "message": formatEvent(dict(event)),
        }
        for key, value in event.items():
            if key not in _OWN and not key.startswith("_"):
                record[key] = _plain(value)
        failure = event.get("log_failure")
        if failure is not None:
            record["error"] = failure.getErrorMessage()
            record["traceback"] = failure.getTraceback()
        return json.dumps(record)


def twistd_observer(logfile: str | None, nodaemon: bool) -> Observer:
    """twistd's ``--logger``: stdout when running in the foreground, else the --logfile (or twistd.log)."""
    if nodaemon and logfile in (None, "", "-"):
        return Observer(sys.stdout)
    return Observer(open(logfile or "twistd.log", "a", encoding="utf-8"))


#: (logfile, nodaemon) of the twistd command line, recorded by pyrowire.tap's options.
twistd_target: tuple[str | None, bool] = (None, True)


def twistd_default() -> Observer:
    """The observer twistd's ``--logger`` names by default for ``twistd pyrowire``."""
    return twistd_observer(*twistd_target)

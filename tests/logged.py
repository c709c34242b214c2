"""Collecting the errors logged while a test runs (the conftest fixture ``logged_errors`` uses it)."""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel, formatEvent


class LoggedErrors:
    """The error events logged while one test ran (level error or critical, or with a failure)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.expected = False

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if "log_failure" in event or (level is not None and level >= LogLevel.error):
            self.events.append(event)

    def expect(self) -> list[dict[str, Any]]:
        """Declare that this test expects errors to be logged; returns the list they are collected in."""
        self.expected = True
        return self.events

    def describe(self) -> str:
        lines = []
        for event in self.events:
            lines.append(formatEvent(event) or repr(event.get("log_format")))
            failure = event.get("log_failure")
            if failure is not None:
                lines.append(failure.getTraceback())
        return "\n".join(lines)

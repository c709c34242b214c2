"""The suite's own guard: errors logged during a test, or failures dropped in Deferreds, are seen."""

from __future__ import annotations

import gc

from twisted.internet.defer import fail
from twisted.logger import Logger

from tests.logged import LoggedErrors


def test_a_dropped_deferred_failure_is_collected_as_a_logged_error(logged_errors: LoggedErrors) -> None:
    """A Deferred garbage-collected with an unhandled failure shows up among the test's logged errors."""
    logged = logged_errors.expect()
    d = fail(RuntimeError("nobody handled me"))
    del d
    gc.collect()
    assert logged
    assert "Unhandled error in Deferred" in logged_errors.describe()
    assert "RuntimeError: nobody handled me" in logged_errors.describe()


def test_error_and_critical_events_are_collected_but_not_warnings(logged_errors: LoggedErrors) -> None:
    """log.error and log.failure count as errors; log.warn does not."""
    logged = logged_errors.expect()
    log = Logger()
    log.warn("only a warning")
    log.error("an error {n}", n=1)
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("a failure")
    assert [e["log_format"] for e in logged] == ["an error {n}", "a failure"]
    assert "an error 1" in logged_errors.describe() and "ValueError: boom" in logged_errors.describe()

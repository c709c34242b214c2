"""Fixtures shared by every test folder: a real Redis server started by the tests themselves."""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator
from typing import cast

import pytest
from twisted.logger import ILogObserver, globalLogPublisher

from tests.logged import LoggedErrors
from tests.redis_server import RedisServer


def redis_command(port: int, *args: str) -> bytes:
    """Send one command to the server on ``port`` and return its raw reply (for fixtures)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"".join(parts))
        return s.recv(65536)


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_server(redis_server_session: RedisServer) -> RedisServer:
    """The session's Redis, emptied for this test (restarted if a test stopped it)."""
    from tests.redis_server import ping

    if not ping(redis_server_session.port):
        redis_server_session.start()
    redis_command(redis_server_session.port, "FLUSHALL")
    return redis_server_session


# A trial TestCase run inside pytest-twisted shares the global reactor with every other test and
# fails on their leftovers (dirty reactor); .ci/run runs this module with trial itself instead.
collect_ignore = ["unit/test_testing_trial.py"]


@pytest.fixture(autouse=True)
def logged_errors(request: pytest.FixtureRequest) -> Iterator[LoggedErrors]:
    """Fail any test during which an error was logged, or a Deferred was collected with an unhandled failure.

    A test that means to provoke errors says so with ``logged_errors.expect()`` (or the
    ``expect_logged_errors`` mark) and may then assert on the events.
    """
    errors = LoggedErrors()
    errors.expected = request.node.get_closest_marker("expect_logged_errors") is not None
    observer = cast(ILogObserver, errors)
    globalLogPublisher.addObserver(observer)
    try:
        yield errors
        # a Deferred dropped with an unhandled failure logs it when collected; what survives is
        # frozen, so that the next test's collection scans only the objects that test made
        gc.collect()
        gc.freeze()
    finally:
        globalLogPublisher.removeObserver(observer)
    if errors.events and not errors.expected:
        pytest.fail(f"errors were logged during the test:\n{errors.describe()}", pytrace=False)

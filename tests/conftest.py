"""Fixtures shared by every test folder: a real Redis server started by the tests themselves."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

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

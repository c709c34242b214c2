"""Fixtures of the process tests: a Deployment (app folder, fake Twilio) on the tests' Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process.harness import Deployment
from tests.redis_server import RedisServer


@pytest.fixture
def deployment(tmp_path: Path, redis_server: RedisServer) -> Iterator[Deployment]:
    d = Deployment(tmp_path, redis_server.url)
    try:
        yield d
    finally:
        d.close()
    errors = d.unexpected_errors()
    if errors:
        pytest.fail("the daemons logged errors during the test:\n" + "\n".join(errors), pytrace=False)

"""Secrets stay secret: an error-heavy run leaves no auth token or Redis password in any output."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process.harness import TOKEN, Deployment, request, send_webhook, webhook_params
from tests.redis_server import RedisServer

PASSWORD = "redis-pass-Zq8v3kT"


@pytest.fixture
def guarded_redis() -> Iterator[RedisServer]:
    with RedisServer(password=PASSWORD) as server:
        yield server


def test_error_heavy_run_leaks_no_secret(tmp_path: Path, guarded_redis: RedisServer) -> None:
    """Bad signatures, Twilio failures, handler errors and a Redis outage leak no token or password anywhere."""
    deployment = Deployment(tmp_path, guarded_redis.url)
    try:
        env = deployment.env(PYROWIRE_TWILIO_TIMEOUT="1")
        process, base = deployment.twistd("--app", "app", env=env)
        process.wait_healthy(base)
        answers: list[str] = []
        answers.append(send_webhook(base, "echo", webhook_params("SMs1", "hi"), token="wrong")[1])
        answers.append(send_webhook(base, "echo", webhook_params("SMs2", "hi"), token=None)[1])
        fail = json.dumps({"status": 401, "count": 1, "code": 20003, "message": f"Authenticate {TOKEN}"})
        urllib.request.urlopen(urllib.request.Request(f"{deployment.twilio.url}/_fake/fail", fail.encode(),
                                                      {"Content-Type": "application/json"}), timeout=5)
        answers.append(send_webhook(base, "echo", webhook_params("SMs3", "hi"))[1])
        answers.append(send_webhook(base, "flaky", webhook_params("SMs4", "hi"))[1])
        guarded_redis.stop()
        answers.append(send_webhook(base, "echo", webhook_params("SMs5", "hi"))[1])
        answers.append(request("GET", f"{base}/health")[2].decode())
        answers.append(request("GET", f"{base}/metrics")[2].decode())
        guarded_redis.start()
        process.terminate()
        bad_redis, _ = deployment.twistd("--app", "app", "--redis",
                                         f"redis://:{PASSWORD}@127.0.0.1:1/0")
        bad_redis.process.wait(15)
        everything = "\n".join([*answers, process.output, bad_redis.output])
        assert "Traceback" in process.output  # the error-heavy run did log handler failures ...
        assert TOKEN not in everything  # ... but never the auth token
        assert PASSWORD not in everything  # ... nor the Redis password
        assert "cannot reach Redis at redis://127.0.0.1:1/0" in bad_redis.output
    finally:
        deployment.close()

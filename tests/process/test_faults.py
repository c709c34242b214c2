"""Faults survived by real processes: failing handlers, Redis restarts, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import redis_command
from tests.process.harness import Deployment, request, send_webhook, wait_for, webhook_params
from tests.redis_server import RedisServer

PYROWIRE = os.path.join(os.path.dirname(sys.executable), "pyrowire")


def llen(redis: RedisServer, key: str) -> int:
    return int(redis_command(redis.port, "LLEN", key)[1:].strip())


def test_failing_handler_is_retried_then_dead_lettered_then_requeued(deployment: Deployment,
                                                                    redis_server: RedisServer) -> None:
    """max_attempts 3: three runs, then a dead letter; `pyrowire dead requeue` gets it handled once fixed."""
    deployment.expect_errors("handler for flaky failed on SMflaky")
    process, base = deployment.twistd("--app", "app")
    process.wait_healthy(base)
    assert send_webhook(base, "flaky", webhook_params("SMflaky", "try me"))[0] == 200
    attempts = deployment.dir / "markers" / "flaky-attempts"
    wait_for(lambda: llen(redis_server, "pyrowire:{flaky}:dead") == 1, 15, "the dead letter")
    assert attempts.read_text().split() == ["SMflaky"] * 3
    assert llen(redis_server, "pyrowire:{flaky}:errors") == 3
    listed = subprocess.run([PYROWIRE, "dead", "list", "flaky", "--redis", redis_server.url],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert "SMflaky" in listed.stdout and '"try me"' in listed.stdout
    assert "1 dead letter in flaky" in listed.stdout
    (deployment.dir / "markers" / "fixed").write_text("yes")
    requeued = subprocess.run([PYROWIRE, "dead", "requeue", "flaky", "--redis", redis_server.url],
                              capture_output=True, text=True, timeout=30)
    assert requeued.returncode == 0, requeued.stderr
    assert "requeued 1 dead letter of flaky" in requeued.stdout
    assert deployment.twilio.wait_messages(1)[0]["body"] == "fixed try me"
    assert llen(redis_server, "pyrowire:{flaky}:dead") == 0
    assert process.terminate() == 0


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    with RedisServer(persistent=True) as server:
        yield server


def test_redis_restart_under_a_running_process(tmp_path: Path, persistent_redis: RedisServer) -> None:
    """While Redis is down the webhook answers error TwiML and /health 503; after it is back, all resumes. The log
    says so in one line each way, not once per connection and retry."""
    deployment = Deployment(tmp_path, persistent_redis.url)
    try:
        process, base = deployment.twistd("--app", "app", "--concurrency", "1")
        process.wait_healthy(base)
        for i in range(8):
            assert send_webhook(base, "slow", webhook_params(f"SMr{i}", f"before {i}"))[0] == 200
        persistent_redis.stop()  # with messages queued and one in flight
        status, body = send_webhook(base, "echo", webhook_params("SMdown", "while down"))
        assert status == 200 and "It seems like an error has occurred" in body
        assert request("GET", f"{base}/health")[0] == 503
        process.wait_log("is unreachable: the webhook answers each topic's error_response; the workers of", 5)
        time.sleep(1)
        persistent_redis.start()
        wait_for(lambda: request("GET", f"{base}/health")[0] == 200, 20, "pyrowire to see Redis again")
        process.wait_log(f"Redis at redis://127.0.0.1:{persistent_redis.port}/0 is back after", 5)
        assert send_webhook(base, "echo", webhook_params("SMafter", "after"))[0] == 200
        replies = deployment.twilio.wait_messages(9, timeout=30)
        bodies = {m["body"] for m in replies}
        assert {f"slow before {i}" for i in range(8)} <= bodies
        assert "echo: after" in bodies
        assert "echo: while down" not in bodies
        output = process.output
        assert output.count("Redis unavailable, answering error_response") == 1  # logged once per outage
        assert output.count("is unreachable") == 1 and output.count("is back after") == 1
        for chatter in ("Scheduling retry", "Discarding dead connection", "could not set dbid", "pop from",
                        "heartbeat failed"):
            assert chatter not in output
        assert "Traceback" not in output
        assert process.terminate() == 0
    finally:
        deployment.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_lets_the_handler_in_flight_finish_and_exits_zero(deployment: Deployment, redis_server: RedisServer,
                                                                 sig: signal.Signals) -> None:
    """SIGTERM, or SIGINT (Ctrl-C), with a handler in flight: its reply still arrives, and twistd exits 0 within
    the grace."""
    process, base = deployment.twistd("--app", "app", "--grace", "10")
    process.wait_healthy(base)
    assert send_webhook(base, "linger", webhook_params("SMterm", "drain me"))[0] == 200
    wait_for((deployment.dir / "markers" / "linger-SMterm").exists, 10, "the handler to start")
    signalled = time.monotonic()
    assert process.terminate(timeout=15, sig=sig) == 0
    assert time.monotonic() - signalled < 10
    assert [m["body"] for m in deployment.twilio.messages()] == ["lingered drain me"]
    assert llen(redis_server, "pyrowire:{linger}:complete") == 1
    assert redis_command(redis_server.port, "KEYS", "pyrowire:{linger}:inflight:*") == b"*0\r\n"


def test_grace_expiry_leaves_the_message_in_flight_for_recovery(deployment: Deployment,
                                                               redis_server: RedisServer) -> None:
    """When --grace runs out, pyrowire exits without recording the unfinished message, which stays in flight."""
    env = deployment.env(LINGER_SECONDS="30")
    process, base = deployment.twistd("--app", "app", "--grace", "1", env=env)
    process.wait_healthy(base)
    assert send_webhook(base, "linger", webhook_params("SMgrace", "too slow"))[0] == 200
    wait_for((deployment.dir / "markers" / "linger-SMgrace").exists, 10, "the handler to start")
    signalled = time.monotonic()
    assert process.terminate(timeout=15) == 0
    assert time.monotonic() - signalled < 5
    keys = redis_command(redis_server.port, "KEYS", "pyrowire:{linger}:inflight:*").split(b"\r\n")
    [inflight] = [k for k in keys if b"inflight" in k]
    held = redis_command(redis_server.port, "LRANGE", inflight.decode(), "0", "-1")
    assert b"SMgrace" in held
    assert llen(redis_server, "pyrowire:{linger}:errors") == 0


def test_second_sigterm_exits_at_once(deployment: Deployment, redis_server: RedisServer) -> None:
    """A second SIGTERM during the drain exits at once, non-zero, leaving the message in flight."""
    env = deployment.env(LINGER_SECONDS="30")
    process, base = deployment.twistd("--app", "app", "--grace", "25", env=env)
    process.wait_healthy(base)
    assert send_webhook(base, "linger", webhook_params("SMtwice", "impatient"))[0] == 200
    wait_for((deployment.dir / "markers" / "linger-SMtwice").exists, 10, "the handler to start")
    process.process.terminate()
    wait_for(lambda: "waiting up to 25.0s" in process.output, 10, "the drain to begin")
    signalled = time.monotonic()
    code = process.terminate(timeout=10)
    assert code != 0
    assert time.monotonic() - signalled < 5
    assert "second signal, exiting now" in process.output
    assert "Traceback" not in process.output
    raw = redis_command(redis_server.port, "KEYS", "pyrowire:{linger}:inflight:*")
    assert b"inflight" in raw

"""Worker processes: crash recovery, concurrency, and the other ways of starting pyrowire."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import redis_command
from tests.process.harness import Deployment, send_webhook, wait_for, webhook_params
from tests.redis_server import RedisServer


def test_sigkilled_worker_message_is_handled_by_the_next(deployment: Deployment,
                                                        redis_server: RedisServer) -> None:
    """A worker SIGKILLed mid-handler loses nothing: a worker started after it handles the message.

    The heartbeat TTL is 2 s here (PYROWIRE_HEARTBEAT_TTL) instead of 15, so recovery comes
    within about 3 s; that the default recovers within SPEC's 30 s is pinned on a Clock
    (tests/unit/test_worker.py).
    """
    quick = deployment.env(PYROWIRE_HEARTBEAT_TTL="2")
    web, base = deployment.twistd("--app", "app", "--role", "web")
    web.wait_healthy(base)
    first, _ = deployment.twistd("--app", "app", "--role", "worker", "--topic", "once", env=quick)
    first.wait_log("serving once")
    assert send_webhook(base, "once", webhook_params("SMkill1", "survive"))[0] == 200
    marker = deployment.dir / "markers" / "SMkill1"
    wait_for(marker.exists, 10, "the handler to start")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    inflight = redis_command(redis_server.port, "KEYS", "pyrowire:{once}:inflight:*")
    assert b"inflight" in inflight  # the message is still held by the dead worker
    second, _ = deployment.twistd("--app", "app", "--role", "worker", "--topic", "once", env=quick)
    replies = deployment.twilio.wait_messages(1, timeout=15)
    assert replies[0]["body"] == "finally survive"
    assert "put back 1 once messages of dead worker" in second.output
    assert second.terminate() == 0
    web.terminate()


def _most_at_once(records: list[dict[str, float]]) -> int:
    """The largest number of handler runs that were going on at the same moment."""
    edges = sorted([(r["started_at"], 1) for r in records] + [(r["finished_at"], -1) for r in records])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_concurrency_20_runs_slow_handlers_at_once(deployment: Deployment, redis_server: RedisServer) -> None:
    """With --concurrency 20, 40 messages whose handler waits 200 ms are handled up to 20 at a time.

    How fast that is belongs to the benchmarks (bench/drain.py), not to a timed test.
    """
    web, base = deployment.twistd("--app", "app", "--role", "web")
    web.wait_healthy(base)
    for i in range(40):
        # forty senders: one sender's texts are handled one at a time (SPEC section 8)
        assert send_webhook(base, "slow", webhook_params(f"SMslow{i}", f"n{i}", number=f"+1555000{i:04d}"))[0] == 200
    worker, _ = deployment.twistd("--app", "app", "--role", "worker", "--topic", "slow", "--concurrency", "20")
    worker.wait_log("serving slow", timeout=10)
    deployment.twilio.wait_messages(40, timeout=20)
    assert worker.terminate() == 0
    raw = redis_command(redis_server.port, "LRANGE", "pyrowire:{slow}:complete", "0", "-1")
    records = [json.loads(line) for line in raw.split(b"\r\n") if line.startswith(b"{")]
    assert len(records) == 40
    assert 10 <= _most_at_once(records) <= 20
    web.terminate()


def test_module_level_api_app(deployment: Deployment) -> None:
    """An app written with pyrowire.configure/handler/validator/sms runs under twistd."""
    process, base = deployment.twistd("--app", "legacy")
    process.wait_healthy(base)
    status, body = send_webhook(base, "echo", webhook_params("SMleg1", "no greeting"))
    assert status == 200 and "Say yo." in body
    status, body = send_webhook(base, "echo", webhook_params("SMleg2", "yo there"))
    assert status == 200 and "Great" in body
    assert deployment.twilio.wait_messages(1)[0]["body"] == "legacy yo there"
    assert process.terminate() == 0


def test_tac_file_configured_by_environment(deployment: Deployment) -> None:
    """twistd -ny pyrowire.tac runs the same service, configured by PYROWIRE_APP, PORT and REDIS_URL."""
    from tests.redis_server import free_port

    port = free_port()
    env = deployment.env(PYROWIRE_APP="app", PORT=str(port), REDIS_URL=deployment.redis_url, TOPIC="echo")
    process, base = deployment.twistd(tac=True, port=port, env=env)
    process.wait_healthy(base)
    assert send_webhook(base, "echo", webhook_params("SMtac1", "from tac"))[0] == 200
    assert deployment.twilio.wait_messages(1)[0]["body"] == "echo: from tac"
    assert process.terminate() == 0


def _pids_of(binary_name: str, cwd_prefix: Path) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(binary_name.encode() in part for part in cmdline[:1]) and any(
            str(cwd_prefix).encode() in part for part in cmdline
        ):
            pids.append(int(entry))
    return pids


def test_embedded_redis_round_trip_leaves_nothing_behind(deployment: Deployment) -> None:
    """--redis embedded serves a round trip, keeps its data under the working directory, and stops with pyrowire."""
    process, base = deployment.twistd("--app", "app", "--redis", "embedded")
    process.wait_healthy(base)
    assert send_webhook(base, "echo", webhook_params("SMemb1", "embedded"))[0] == 200
    assert deployment.twilio.wait_messages(1)[0]["body"] == "echo: embedded"
    data = deployment.dir / ".pyrowire" / "redis"
    assert data.is_dir()
    assert _pids_of("valkey-server", deployment.dir) or _pids_of("redis-server", deployment.dir)
    assert process.terminate() == 0
    assert _pids_of("valkey-server", deployment.dir) == []
    assert _pids_of("redis-server", deployment.dir) == []
    assert not (data / "redis.sock").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_python_app_py_runs_the_app_with_pyrowire_run(deployment: Deployment, sig: signal.Signals) -> None:
    """`ENV=… python legacy.py` (pyrowire.run()) serves, replies, and exits 0 on SIGTERM or SIGINT (Ctrl-C)."""
    import sys

    from tests.process.harness import PyrowireProcess
    from tests.redis_server import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = PyrowireProcess(deployment.dir, [], deployment.env(PORT=str(port)),
                              command=[sys.executable, "legacy.py"])
    deployment.processes.append(process)
    process.wait_healthy(base)
    assert send_webhook(base, "echo", webhook_params("SMrun1", "yo run"))[0] == 200
    assert deployment.twilio.wait_messages(1)[0]["body"] == "legacy yo run"
    assert process.terminate(sig=sig) == 0
    assert "pyrowire stopped" in process.output  # drained, not killed by the signal

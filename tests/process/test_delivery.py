"""Delivery (SPEC section 9) through real twistd processes, a real Redis and the fake Twilio's status callbacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import redis_command
from tests.process.harness import Deployment, PyrowireProcess, request, send_webhook, wait_for, webhook_params
from tests.redis_server import RedisServer, free_port

ANN = "+15550001001"


def markers(deployment: Deployment, name: str) -> list[dict[str, Any]]:
    path = deployment.dir / "markers" / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fake(deployment: Deployment, action: str, spec: dict[str, Any]) -> None:
    status, _, _ = request("POST", f"{deployment.twilio.url}/_fake/{action}", json.dumps(spec).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200


@pytest.fixture
def running(deployment: Deployment) -> Iterator[tuple[Deployment, PyrowireProcess, str]]:
    """One twistd (role all) of the delivery app, whose public_url is its own address."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process, _ = deployment.twistd("--app", "delivery_app", port=port, env=deployment.env(PUBLIC_URL=base))
    process.wait_healthy(base)
    yield deployment, process, base


def test_out_of_order_callbacks_never_move_the_status_backwards(running: Any, redis_server: RedisServer) -> None:
    """delivered before sent: the stored status stays delivered, both events are kept, on_status saw one change."""
    deployment, _, base = running
    fake(deployment, "statuses", {"statuses": ["delivered", "sent"]})
    assert send_webhook(base, "notify", webhook_params("SMorder1", "hi", number=ANN))[0] == 200
    [reply] = wait_for(lambda: markers(deployment, "replies"), 10, "the reply")
    sid = reply["sid"]
    key = f"pyrowire:{{notify}}:delivery:{sid}"
    wait_for(lambda: redis_command(redis_server.port, "LLEN", f"pyrowire:{{notify}}:events:{sid}") == b":2\r\n",
             10, "both callbacks")
    assert b"delivered" in redis_command(redis_server.port, "HGET", key, "status")
    statuses = wait_for(lambda: markers(deployment, "statuses"), 10, "on_status")
    assert [(s["sid"], s["status"], s["previous"]) for s in statuses] == [(sid, "delivered", None)]


def test_stop_then_a_reply_reaches_nothing_and_fires_none(running: Any, redis_server: RedisServer) -> None:
    """After STOP (answered <Response/>), a reply to that number is never sent: app.sms fired None."""
    deployment, _, base = running
    status, twiml = send_webhook(base, "notify", webhook_params("SMstop1", " stop ", number=ANN))
    assert status == 200 and twiml.endswith("<Response/>")
    wait_for(lambda: markers(deployment, "opt_outs"), 10, "on_opt_out")
    assert send_webhook(base, "notify", webhook_params("SMafter1", "still there?", number=ANN))[0] == 200
    [reply] = wait_for(lambda: markers(deployment, "replies"), 10, "the handler to finish")
    assert reply == {"in": "SMafter1", "sid": None}
    assert [m for m in deployment.twilio.messages() if m["to"] == ANN] == []
    assert markers(deployment, "opt_outs") == [{"number": ANN, "opted_out": True}]
    status, twiml = send_webhook(base, "notify", webhook_params("SMhelp1", "HELP", number=ANN))
    assert "Help is here." in twiml


def test_21610_on_a_send_and_in_a_callback_opts_out(running: Any, redis_server: RedisServer) -> None:
    """Twilio's 21610 refusing a send fires None and opts out; a failed callback with 21610 opts out too."""
    deployment, _, base = running
    fake(deployment, "fail", {"status": 400, "count": 1, "code": 21610, "message": "unsubscribed recipient"})
    assert send_webhook(base, "notify", webhook_params("SM21610a", "one", number=ANN))[0] == 200
    [reply] = wait_for(lambda: markers(deployment, "replies"), 10, "the reply")
    assert reply["sid"] is None
    assert redis_command(redis_server.port, "SISMEMBER", "pyrowire:{notify}:optout", ANN) == b":1\r\n"
    other = "+15550001002"
    fake(deployment, "statuses", {"statuses": ["failed"], "error_code": 21610})
    assert send_webhook(base, "notify", webhook_params("SM21610b", "two", number=other))[0] == 200
    wait_for(lambda: redis_command(redis_server.port, "SISMEMBER", "pyrowire:{notify}:optout", other) == b":1\r\n",
             10, "the callback's 21610 to opt out the number")


def test_app_send_from_a_timer(deployment: Deployment) -> None:
    """app.send called from a reactor timer (no message to answer) reaches Twilio and fires with the SID."""
    process, base = deployment.twistd("--app", "delivery_app", env=deployment.env(REMIND_AFTER="0.5"))
    process.wait_healthy(base)
    [reminder] = wait_for(lambda: markers(deployment, "reminders"), 10, "the reminder")
    [sent] = [m for m in deployment.twilio.messages() if m["body"] == "reminder"]
    assert reminder["sid"] == sent["sid"] and sent["to"] == "+15550009999"


def test_pacing_holds_across_two_worker_processes(deployment: Deployment) -> None:
    """At mps 2 with two workers, the fake never receives more than 2 a second beyond a burst of 2."""
    web, base = deployment.twistd("--app", "delivery_app", "--role", "web")
    web.wait_healthy(base)
    for _ in range(2):
        worker, _ = deployment.twistd("--app", "delivery_app", "--role", "worker", "--topic", "paced")
        worker.wait_log("serving paced")
    for i in range(10):
        assert send_webhook(base, "paced", webhook_params(f"SMpace{i}", f"n{i}", number=f"+1555000{i:04d}"))[0] == 200
    arrived = sorted(m["received_at"] for m in deployment.twilio.wait_messages(10, timeout=20))
    for i, start in enumerate(arrived):
        in_a_second = [t for t in arrived[i:] if t < start + 1.0 - 0.05]
        assert len(in_a_second) <= 2 + 2, arrived
    assert arrived[-1] - arrived[0] >= (10 - 2) / 2 - 0.5  # the burst, then 2 a second


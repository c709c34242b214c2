"""Round trips through real processes: twistd, Redis, and a fake Twilio REST API."""

from __future__ import annotations

import time

from tests.conftest import redis_command
from tests.process.harness import Deployment, send_webhook, webhook_params

ACCEPT = ('<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
          "Great, we'll get right back to you.</Message></Response>")


def test_signed_post_and_get_get_replies(deployment: Deployment) -> None:
    """A signed POST and a signed GET webhook are each answered with the accept TwiML and replied to."""
    process, base = deployment.twistd("--app", "app")
    process.wait_healthy(base)
    assert send_webhook(base, "echo", webhook_params("SMpost1", "hello post")) == (200, ACCEPT)
    assert send_webhook(base, "echo", webhook_params("SMget1", "hello get"), method="GET") == (200, ACCEPT)
    replies = deployment.twilio.wait_messages(2)
    assert sorted(m["body"] for m in replies) == ["echo: hello get", "echo: hello post"]
    assert {m["to"] for m in replies} == {"+15551234567"}
    assert {m["from"] for m in replies} == {"+15005550006"}
    assert process.terminate() == 0


def test_same_message_sid_twice_gives_one_reply(deployment: Deployment) -> None:
    """Twilio's retry of a MessageSid gets the same answer and the message is handled once."""
    process, base = deployment.twistd("--app", "app")
    process.wait_healthy(base)
    first = send_webhook(base, "echo", webhook_params("SMdup1", "once only"))
    second = send_webhook(base, "echo", webhook_params("SMdup1", "once only"))
    assert first == second == (200, ACCEPT)
    deployment.twilio.wait_messages(1)
    send_webhook(base, "echo", webhook_params("SMdup2", "marker"))
    deployment.twilio.wait_messages(2)
    assert [m["body"] for m in deployment.twilio.messages()].count("echo: once only") == 1
    process.terminate()


def test_web_and_worker_processes_split(deployment: Deployment, redis_server) -> None:
    """A --role web process queues and a separate --role worker process replies."""
    web, base = deployment.twistd("--app", "app", "--role", "web")
    web.wait_healthy(base)
    assert send_webhook(base, "echo", webhook_params("SMsplit1", "split")) == (200, ACCEPT)
    time.sleep(0.5)
    assert deployment.twilio.messages() == []
    queued = redis_command(redis_server.port, "LLEN", "pyrowire:{echo}:queue")
    assert queued == b":1\r\n"
    worker, _ = deployment.twistd("--app", "app", "--role", "worker", "--topic", "echo")
    replies = deployment.twilio.wait_messages(1)
    assert replies[0]["body"] == "echo: split"
    assert worker.terminate() == 0
    assert web.terminate() == 0

"""Twilio REST faults through real processes: retried 5xx, 429 and hangs, and a permanent 400."""

from __future__ import annotations

import json
import time

from tests.conftest import redis_command
from tests.process.harness import Deployment, request, send_webhook, wait_for, webhook_params

ACCEPTED = 200


def fake_control(deployment: Deployment, path: str, spec: dict[str, object]) -> dict[str, object]:
    """POST ``spec`` to one of the fake Twilio's /_fake/ endpoints and return its JSON answer."""
    status, _, body = request("POST", f"{deployment.twilio.url}/_fake/{path}", json.dumps(spec).encode(),
                              {"Content-Type": "application/json"})
    assert status == 200, body
    answer: dict[str, object] = json.loads(body)
    return answer


def queued_failures(deployment: Deployment) -> object:
    """How many queued failures the fake has not used yet (a fail request with count 0 only reads it)."""
    return fake_control(deployment, "fail", {"count": 0})["queued"]


def test_server_errors_are_retried_until_the_reply_arrives(deployment: Deployment) -> None:
    """Two 500s from Twilio are retried and the echo reply is still delivered once."""
    process, base = deployment.twistd("--app", "app")
    process.wait_healthy(base)
    fake_control(deployment, "fail", {"status": 500, "count": 2, "code": 20500})
    assert send_webhook(base, "echo", webhook_params("SMfault500", "after errors"))[0] == ACCEPTED
    [reply] = deployment.twilio.wait_messages(1, timeout=15)
    assert reply["body"] == "echo: after errors"
    assert queued_failures(deployment) == 0
    process.wait_log("Twilio send failed (500), retry 2")
    assert "test-auth-token-0123456789" not in process.output
    assert process.terminate() == 0


def test_rate_limit_retry_after_is_honoured(deployment: Deployment) -> None:
    """A 429 with Retry-After: 1 delays the reply by at least one second, then it arrives."""
    process, base = deployment.twistd("--app", "app")
    process.wait_healthy(base)
    fake_control(deployment, "fail", {"status": 429, "count": 1, "code": 20429, "retry_after": 1})
    sent_at = time.time()
    assert send_webhook(base, "echo", webhook_params("SMfault429", "slow down"))[0] == ACCEPTED
    [reply] = deployment.twilio.wait_messages(1, timeout=15)
    assert reply["body"] == "echo: slow down"
    assert reply["received_at"] - sent_at >= 1.0
    assert process.terminate() == 0


def test_hung_send_times_out_and_is_retried(deployment: Deployment) -> None:
    """A send the fake never answers times out after PYROWIRE_TWILIO_TIMEOUT and the retry delivers the reply."""
    process, base = deployment.twistd("--app", "app", env=deployment.env(PYROWIRE_TWILIO_TIMEOUT="1"))
    process.wait_healthy(base)
    fake_control(deployment, "hang", {"count": 1})
    sent_at = time.time()
    assert send_webhook(base, "echo", webhook_params("SMfaulthang", "are you there"))[0] == ACCEPTED
    [reply] = deployment.twilio.wait_messages(1, timeout=15)
    assert reply["body"] == "echo: are you there"
    assert reply["received_at"] - sent_at >= 1.0
    process.wait_log("Twilio send failed (no answer), retry 1")
    assert process.terminate() == 0


def test_invalid_number_is_attempted_once_and_recorded(deployment: Deployment, redis_server) -> None:
    """A 400 with code 21211 is not retried, and the handler's error record in Redis carries 21211."""
    deployment.expect_errors("handler for echo failed on SMfault400")
    process, base = deployment.twistd("--app", "app")
    process.wait_healthy(base)
    fake_control(deployment, "fail", {"status": 400, "count": 2, "code": 21211,
                                      "message": "Invalid 'To' Phone Number"})
    assert send_webhook(base, "echo", webhook_params("SMfault400", "to nowhere"))[0] == ACCEPTED

    def error_records() -> bytes:
        reply = redis_command(redis_server.port, "LRANGE", "pyrowire:{echo}:errors", "0", "-1")
        return reply if b"21211" in reply else b""

    records = wait_for(error_records, 15, "the handler's error record")
    assert b"Invalid 'To' Phone Number" in records
    assert queued_failures(deployment) == 1
    assert deployment.twilio.messages() == []
    assert process.terminate() == 0

"""Every row of the webhook table (SPEC §5), answered by a real twistd process."""

from __future__ import annotations

import json
import time

from tests.conftest import redis_command
from tests.process.harness import Deployment, request, send_webhook, webhook_params
from tests.redis_server import RedisServer

DECL = '<?xml version="1.0" encoding="UTF-8"?>'


def twiml(text: str) -> str:
    return f"{DECL}<Response><Message>{text}</Message></Response>"


def queue_length(redis: RedisServer, topic: str) -> int:
    return int(redis_command(redis.port, "LLEN", f"pyrowire:{{{topic}}}:queue")[1:].strip())


def test_webhook_table(deployment: Deployment, redis_server: RedisServer) -> None:
    """Each case of SPEC §5 gets its status and body; invalid messages are neither queued nor answered by REST."""
    deployment.expect_errors("Redis unavailable, answering error_response", "is unreachable: ")  # the Redis-down row
    web, base = deployment.twistd("--app", "app", "--role", "web")
    web.wait_healthy(base)

    # a validator says invalid: its message as TwiML, nothing queued
    status, body = send_webhook(base, "echo", webhook_params("SMbad1", "well SHIT."))
    assert (status, body) == (200, twiml("No profanity, please."))
    status, body = send_webhook(base, "echo", webhook_params("SMbad2", "smile \U0001f600"))
    assert (status, body) == (200, twiml("Please only use alphanumeric and punctuation characters."))
    status, body = send_webhook(base, "open", webhook_params("SMempty", ""))
    assert (status, body) == (200, twiml("Too long."))
    assert queue_length(redis_server, "echo") == 0
    # the same invalid MessageSid again: the same answer
    assert send_webhook(base, "echo", webhook_params("SMbad1", "well SHIT.")) == (200, twiml("No profanity, please."))

    # accepted and queued; an empty accept_response would be <Response/>
    status, body = send_webhook(base, "echo", webhook_params("SMok1", "fine words"))
    assert status == 200 and "Great, we'll get right back to you." in body
    assert queue_length(redis_server, "echo") == 1

    # unknown topic
    assert send_webhook(base, "nope", webhook_params("SMx", "hi"))[0] == 404

    # required fields
    for field in ("MessageSid", "From", "Body"):
        params = webhook_params("SMmissing", "hi")
        del params[field]
        status, body = send_webhook(base, "echo", params)
        assert status == 400 and field in body and "<" not in body, body

    # signatures
    assert send_webhook(base, "echo", webhook_params("SMsig1", "hi"), token=None)[0] == 403
    assert send_webhook(base, "echo", webhook_params("SMsig2", "hi"), token="not-the-token")[0] == 403
    assert send_webhook(base, "echo", webhook_params("SMsig3", "hi"), signature="AAAA")[0] == 403

    # body over 64 KiB
    status, _, _ = request("POST", f"{base}/queue/open", b"Body=" + b"x" * (65 * 1024),
                                {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413

    # other methods
    for method in ("PUT", "DELETE", "PATCH"):
        assert request(method, f"{base}/queue/echo")[0] == 405

    # nothing was sent through the REST API by the web role
    assert deployment.twilio.messages() == []
    assert queue_length(redis_server, "echo") == 1

    # Redis unreachable: the topic's error_response, /health 503, and back when Redis is
    redis_server.stop()
    try:
        status, body = send_webhook(base, "echo", webhook_params("SMdown", "hello"))
        assert (status, body) == (200, twiml("It seems like an error has occurred...please try again later."))
        status, _, health = request("GET", f"{base}/health")
        assert status == 503 and json.loads(health)["status"] != "ok"
    finally:
        redis_server.start()
    deadline = time.monotonic() + 15
    while request("GET", f"{base}/health")[0] != 200:
        assert time.monotonic() < deadline, "pyrowire did not reconnect to Redis"
        time.sleep(0.1)
    status, body = send_webhook(base, "echo", webhook_params("SMback", "hello again"))
    assert status == 200 and "Great" in body
    assert "Traceback" not in web.output
    assert "test-auth-token" not in web.output
    assert web.terminate() == 0


def test_send_on_accept_and_records(deployment: Deployment, redis_server: RedisServer) -> None:
    """send_on_accept sends the accept response by REST too; completes are recorded with outbound SIDs and media."""
    process, base = deployment.twistd("--app", "app")
    process.wait_healthy(base)
    status, body = send_webhook(base, "greet", webhook_params("SMgreet", "hi"))
    assert (status, body) == (200, twiml("Hi &amp; welcome &lt;3"))
    params = webhook_params("SMmms", "look", NumMedia="1", MediaUrl0="https://example.com/cat.jpg",
                            MediaContentType0="image/jpeg")
    assert send_webhook(base, "echo", params)[0] == 200
    sent = deployment.twilio.wait_messages(2)
    bodies = sorted(m["body"] for m in sent)
    assert bodies == ["Hi & welcome <3", "echo: look"]
    deadline = time.monotonic() + 10
    while True:
        raw = redis_command(redis_server.port, "LRANGE", "pyrowire:{echo}:complete", "0", "-1")
        if b"SMmms" in raw:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    record = json.loads(raw[raw.index(b"{"):raw.rindex(b"}") + 1])
    reply_sid = next(m["sid"] for m in sent if m["body"] == "echo: look")
    assert record["sids"] == [reply_sid]
    assert record["result"]["media"] == {"count": 1, "media": {"https://example.com/cat.jpg": "image/jpeg"}}
    assert record["result"]["reply"] == "echo: look"
    assert record["message"]["from_city"] == "PORTLAND"
    process.terminate()

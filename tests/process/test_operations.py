"""Operations endpoints of real processes: /metrics in Prometheus text, /health, no secrets."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.process.harness import Deployment, request, send_webhook, wait_for, webhook_params
from tests.redis_server import free_port


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = request("GET", f"{base}/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert "test-auth-token" not in text and "hunter2" not in text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_webhooks_handlers_and_sends(deployment: Deployment) -> None:
    """/metrics shows webhooks by outcome, handler durations, Twilio sends and queue depths."""
    process, base = deployment.twistd("--app", "app")
    process.wait_healthy(base)
    send_webhook(base, "echo", webhook_params("SMm1", "counted"))
    send_webhook(base, "echo", webhook_params("SMm1", "counted"))
    send_webhook(base, "echo", webhook_params("SMm2", "shit"))
    send_webhook(base, "echo", webhook_params("SMm3", "hi"), token=None)
    send_webhook(base, "random-topic-name", webhook_params("SMm4", "hi"))
    deployment.twilio.wait_messages(1)

    def handled() -> dict | None:
        found = samples(base)
        return found if found.get(("pyrowire_handler_seconds_count", (("topic", "echo"),))) == 1 else None

    found = wait_for(handled, 10, "the handler to be counted")
    webhooks = {labels: v for (name, labels), v in found.items() if name == "pyrowire_webhooks_total"}
    assert webhooks[(("outcome", "queued"), ("topic", "echo"))] == 1
    assert webhooks[(("outcome", "duplicate"), ("topic", "echo"))] == 1
    assert webhooks[(("outcome", "invalid"), ("topic", "echo"))] == 1
    assert webhooks[(("outcome", "forbidden"), ("topic", "echo"))] == 1
    assert webhooks[(("outcome", "unknown_topic"), ("topic", ""))] == 1
    assert not any(dict(labels).get("topic") == "random-topic-name" for (_, labels) in found)
    assert found[("pyrowire_twilio_sends_total", (("outcome", "sent"), ("topic", "echo")))] == 1
    assert found[("pyrowire_queue_depth", (("state", "queued"), ("topic", "echo")))] == 0
    assert found[("pyrowire_queue_depth", (("state", "dead"), ("topic", "echo")))] == 0
    assert found[("pyrowire_redis_up", ())] == 1
    assert process.terminate() == 0


def test_worker_with_listen_serves_operations_only(deployment: Deployment) -> None:
    """A --role worker process given --listen answers /health and /metrics but takes no webhooks."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker, _ = deployment.twistd("--app", "app", "--role", "worker", "--listen",
                                  f"tcp:port={port}:interface=127.0.0.1")
    worker.wait_healthy(base)
    assert ("pyrowire_redis_up", ()) in samples(base)
    assert send_webhook(base, "echo", webhook_params("SMw1", "hi"))[0] == 404
    assert worker.terminate() == 0

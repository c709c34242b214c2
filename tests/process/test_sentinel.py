"""A daemon behind Redis Sentinel follows a failover: webhook and workers resume on the new primary, no restart.

A primary, a replica and three Sentinels run on loopback; one ``twistd -n pyrowire --role
all --redis redis+sentinel://…`` daemon takes a steady stream of webhooks while
``SENTINEL FAILOVER`` promotes the replica. The test counts what the failover cost: webhooks
answered with the error response while the primary moved, and accepted webhooks whose
message was never handled (written to the old primary after the replica stopped copying
it, which Redis's asynchronous replication loses). docs/deploying.md quotes these counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.process.harness import Deployment, send_webhook, wait_for, webhook_params
from tests.sentinels import SentinelCluster

PASSWORD = "sentinel-test-secret"
PYROWIRE = os.path.join(os.path.dirname(sys.executable), "pyrowire")
ACCEPTED = "Great, we'll get right back to you."
ERROR = "It seems like an error has occurred"
RATE = 40  # webhooks a second
RESUME_LIMIT = 30.0  # seconds, SPEC section 11
# how long the test waits for the last messages of the switch to be handled: a heartbeat every second (below)
# sweeps a message left in flight within about 3 s
SETTLE_SECONDS = 6.0


@dataclass
class Sent:
    n: int
    at: float  # time.monotonic() when answered
    outcome: str  # accepted, error or failed (no HTTP answer)


class Traffic:
    """Webhooks to the echo topic at RATE a second from a thread, each answer kept."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            began = time.monotonic()
            params = webhook_params(f"SM{n:032d}", f"m{n}", number=f"+1555000{n % 8:04d}")
            try:
                status, answer = send_webhook(self.base, "echo", params)
                outcome = "accepted" if status == 200 and ACCEPTED in answer else (
                    "error" if ERROR in answer else f"http {status}")
            except OSError:
                outcome = "failed"
            self.sent.append(Sent(n, time.monotonic(), outcome))
            n += 1
            self._stop.wait(max(0.0, 1 / RATE - (time.monotonic() - began)))


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    with SentinelCluster(password=PASSWORD) as c:
        yield c


@pytest.mark.parametrize("how", ["failover", "crash"])
def test_failover_is_followed_without_a_restart(tmp_path: Path, cluster: SentinelCluster, how: str) -> None:
    """After SENTINEL FAILOVER, or the primary's SIGKILL and the Sentinels' own failover, the same daemon accepts
    webhooks and handles them on the new primary within 30 s; what was lost in the switch is counted, and the
    password appears nowhere."""
    old, new = cluster.primary.port, cluster.replica.port
    deployment = Deployment(tmp_path, cluster.url)
    try:
        daemon, base = deployment.twistd("--app", "app", "--role", "all", "--redis", cluster.url,
                                         "--concurrency", "4", env=deployment.env(PYROWIRE_HEARTBEAT_TTL="3"))
        daemon.wait_healthy(base)
        daemon.wait_log(f"the primary of pyrowire-test is 127.0.0.1:{old}")
        traffic = Traffic(base).start()
        try:
            wait_for(lambda: len(deployment.twilio.messages()) >= 20, 10, "replies before the failover")
            if how == "crash":
                deployment.expect_errors("Redis unavailable, answering error_response", "is unreachable")
                cluster.primary.kill()
            else:
                cluster.failover()
            failed_over = time.monotonic()
            daemon.wait_log(f"moved from 127.0.0.1:{old} to 127.0.0.1:{new}", timeout=RESUME_LIMIT)
            moved = time.monotonic()
            # resumed: a webhook accepted after the move, and its reply sent from the new primary's queue
            resumed = wait_for(lambda: next((s for s in traffic.sent if s.at > moved and s.outcome == "accepted"),
                                            None), RESUME_LIMIT, "a webhook accepted after the failover")
            wait_for(lambda: f"echo: m{resumed.n}" in _bodies(deployment), RESUME_LIMIT,
                     "the reply to a webhook accepted after the failover")
            time.sleep(1.0)  # a little more traffic on the new primary
        finally:
            traffic.stop()
        resumed_after = resumed.at - failed_over
        assert resumed_after < RESUME_LIMIT
        accepted = [s for s in traffic.sent if s.outcome == "accepted"]

        def unhandled() -> list[int]:
            bodies = _bodies(deployment)
            return [s.n for s in accepted if f"echo: m{s.n}" not in bodies]

        # a message whose finish went to the old primary waits in flight on the new one until the sweep
        # (two heartbeats) puts it back, and its conversation with it; give that time, then count
        try:
            wait_for(lambda: not unhandled(), SETTLE_SECONDS, "every accepted webhook handled", interval=0.2)
        except AssertionError:
            pass
        lost = unhandled()
        refused = [s.n for s in traffic.sent if s.outcome != "accepted"]
        replies = [m["body"] for m in deployment.twilio.messages()]
        print(f"\nsentinel {how}: {len(traffic.sent)} webhooks, {len(accepted)} accepted, "
              f"{len(refused)} answered error_response or failed, {len(lost)} accepted and never handled {lost}, "
              f"{len(replies) - len(set(replies))} handled twice; switch seen {moved - failed_over:.2f} s and "
              f"first accepted webhook on the new primary {resumed_after:.2f} s after the {how}")
        # anything lost was accepted around the switch, not after it
        assert all(traffic.sent[n].at <= moved + 1 for n in lost), lost
        # the workers finish on the new primary: it holds the completion of every webhook accepted after the switch
        new_client = cluster.client(new)
        if how == "crash":  # nothing could be written to the old primary after it died: nothing lost
            assert not lost
        assert new_client.execute_command("ROLE")[0] == "master"
        completed = {json.loads(r)["message"]["message"] for r in new_client.lrange("pyrowire:{echo}:complete", 0, -1)}
        assert all(f"m{s.n}" in completed for s in accepted if s.at > moved + 1)
        # the console command finds the new primary through the Sentinels too
        listed = subprocess.run([PYROWIRE, "dead", "list", "echo", "--redis", cluster.url], cwd=deployment.dir,
                                env=deployment.env(), capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
        assert PASSWORD not in listed.stdout + listed.stderr
        assert daemon.process.poll() is None  # no restart
        assert PASSWORD not in daemon.output
        assert daemon.terminate() == 0
    finally:
        deployment.close()
    errors = deployment.unexpected_errors()
    assert not errors, "\n".join(errors)


def _bodies(deployment: Deployment) -> set[str]:
    return {m["body"] for m in deployment.twilio.messages()}

"""Conversations through real twistd processes and a real Redis (SPEC section 8): order, concurrency, sessions."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from itertools import pairwise

from tests.process.harness import Deployment, wait_for
from tests.process.records import (
    APP,
    Run,
    client,
    finished,
    key,
    most_at_once,
    runs,
    send,
    wait_runs,
    web_and_quick_workers,
    worker_id,
)
from tests.redis_server import RedisServer

# how long each of a sender's five messages takes, in turn: later ones are often quicker than earlier ones
DURATIONS = (0.3, 0.05, 0.2, 0.1, 0.15)


def by_sender(found: list[Run]) -> dict[str, list[Run]]:
    """Each sender's runs, in the order they started."""
    grouped: dict[str, list[Run]] = defaultdict(list)
    for run in found:
        grouped[run.number].append(run)
    return grouped


def test_one_senders_messages_run_in_order_one_at_a_time_across_two_workers(deployment: Deployment) -> None:
    """Four senders text five messages each, handled by two worker processes: each sender's messages run in the
    order accepted and never overlap, while different senders' run at the same time."""
    web, base = deployment.twistd("--app", APP, "--role", "web")
    web.wait_healthy(base)
    workers = [deployment.twistd("--app", APP, "--role", "worker", "--topic", "talk", "--concurrency", "4")[0]
               for _ in range(2)]
    for worker in workers:
        worker_id(worker, "talk")
    numbers = [f"+155560{s:05d}" for s in range(4)]
    for m in range(5):
        for s, number in enumerate(numbers):
            send(base, "talk", f"SMtalk{s}x{m}", f"s{s}m{m} sleep={DURATIONS[(m + s) % 5]}", number=number)
    found = wait_runs(deployment, "talk", 20, timeout=20)
    for s, number in enumerate(numbers):
        mine = by_sender(found)[number]
        assert [run.body.split()[0] for run in mine] == [f"s{s}m{m}" for m in range(5)]
        for earlier, later in pairwise(mine):
            assert earlier.end is not None and earlier.end <= later.start
    assert {run.pid for run in found} == {w.process.pid for w in workers}
    assert most_at_once(finished(found)) >= 3
    for worker in workers:
        assert worker.terminate() == 0
    assert web.terminate() == 0


def test_an_unordered_topic_runs_one_senders_messages_at_once(deployment: Deployment) -> None:
    """With ``ordered: False``, three messages of one sender taking half a second each run at the same time."""
    process, base = deployment.twistd("--app", APP, "--topic", "crowd", "--concurrency", "4")
    process.wait_healthy(base)
    for m in range(3):
        send(base, "crowd", f"SMcrowd{m}", f"crowd{m} sleep=0.5", number="+15556200000")
    found = wait_runs(deployment, "crowd", 3, timeout=10)
    assert {run.number for run in found} == {"+15556200000"}
    assert most_at_once(finished(found)) == 3
    assert process.terminate() == 0


def test_a_message_put_back_after_its_worker_died_runs_before_its_senders_later_ones(
        deployment: Deployment, redis_server: RedisServer) -> None:
    """When the worker holding a conversation is SIGKILLed mid-message, its later messages wait, the killed
    message runs again first, then the later ones in order; another sender's go on meanwhile."""
    web, base, workers = web_and_quick_workers(deployment, "talk", 2)
    held, other = "+15556300001", "+15556300002"
    send(base, "talk", "SMheld1", "a1 hang", number=held)  # its first run waits a minute: killed meanwhile
    [hung] = wait_runs(deployment, "talk", 1, timeout=10, finished=False)
    send(base, "talk", "SMheld2", "a2", number=held)
    send(base, "talk", "SMheld3", "a3", number=held)
    send(base, "talk", "SMother1", "b1", number=other)
    [holder] = [w for w in workers if w.process.pid == hung.pid]
    wait_for(lambda: any(run.sid == "SMother1" and run.end for run in runs(deployment, "talk")), 10,
             "the other sender's message to be handled while a1 hangs")
    r = client(redis_server.url)
    assert r.llen(key("talk", f"conv:{held}")) == 2  # a2 and a3 wait behind a1
    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait(10)

    def all_but_the_killed_run_finished() -> list[Run] | None:
        found = runs(deployment, "talk")
        return found if len(found) == 5 and sum(run.end is None for run in found) == 1 else None

    grouped = by_sender(wait_for(all_but_the_killed_run_finished, 15, "a1 again, a2 and a3"))
    assert [run.body.split()[0] for run in grouped[other]] == ["b1"]
    assert [run.body.split()[0] for run in grouped[held]] == ["a1", "a1", "a2", "a3"]
    killed, again, second, third = grouped[held]
    assert killed.end is None and killed.pid == holder.process.pid
    assert again.end is not None and again.end <= second.start and second.end is not None
    assert second.end <= third.start
    [survivor] = [w for w in workers if w is not holder]
    assert "put back 1 talk messages of dead worker" in survivor.output
    assert survivor.terminate() == 0
    assert web.terminate() == 0


def test_a_session_counts_one_two_three_and_a_failed_run_changes_nothing(deployment: Deployment,
                                                                          redis_server: RedisServer) -> None:
    """A handler counting in ``message['session']`` replies 1, 2, 3 to one sender's messages around a failing
    one, which leaves the stored session as it was, while another sender counts on its own."""
    deployment.expect_errors("handler for count failed on SMcount-fail")
    process, base = deployment.twistd("--app", APP, "--topic", "count")
    process.wait_healthy(base)
    one, two = "+15556400001", "+15556400002"
    send(base, "count", "SMcount1", "c1", number=one)
    send(base, "count", "SMcount2", "c2", number=one)
    send(base, "count", "SMcount-fail", "c fail", number=one)
    send(base, "count", "SMcount3", "c3", number=one)
    send(base, "count", "SMcount-other", "o1", number=two)
    replies = deployment.twilio.wait_messages(4, timeout=10)
    assert [m["body"] for m in replies if m["to"] == one] == ["count 1", "count 2", "count 3"]
    assert [m["body"] for m in replies if m["to"] == two] == ["count 1"]
    r = client(redis_server.url)
    assert r.llen(key("count", "dead")) == 1
    assert json.loads(r.get(key("count", f"session:{one}")) or "null") == {"count": 3}
    assert 0 < r.ttl(key("count", f"session:{one}")) <= 86400
    assert process.terminate() == 0

"""The queue under faults, through real twistd processes and a real Redis (issue 10).

Bad payloads and results, Redis refusing writes, workers killed by their own message,
retries out of the loop, stopping, stranded in-flight messages and long dead-letter lists:
none of them loses a message or stops a worker loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import redis

from tests.process.harness import Deployment, send_webhook, wait_for, webhook_params
from tests.process.records import (
    APP,
    QUICK_HEARTBEAT,
    client,
    envelope,
    finished,
    key,
    most_at_once,
    quick_worker,
    records,
    runs,
    send,
    sids,
    wait_runs,
    web_and_quick_workers,
    worker_id,
)
from tests.process.test_twilio_faults import fake_control
from tests.redis_server import RedisServer

PYROWIRE = os.path.join(os.path.dirname(sys.executable), "pyrowire")


def every_loop_serves(deployment: Deployment, base: str, r: redis.Redis, loops: int) -> None:
    """``loops`` messages of as many senders, each taking 0.6 s, all run at the same time (so every loop is alive)."""
    before = len(runs(deployment, "work"))
    for i in range(loops):
        send(base, "work", f"SMalive{i}", f"alive{i} sleep=0.6", number=f"+1555300{i:04d}")
    found = wait_runs(deployment, "work", before + loops, timeout=15)[before:]
    assert most_at_once(finished(found)) == loops
    wait_for(lambda: {f"SMalive{i}" for i in range(loops)} <= set(sids(records(r, "work", "complete"))), 5,
             "the complete records")


def test_malformed_payload_is_dead_lettered_and_every_loop_goes_on(deployment: Deployment,
                                                                   redis_server: RedisServer) -> None:
    """A payload that is not JSON, pushed straight into a topic's queue, is dead-lettered with an error record,
    and all the worker's loops go on handling messages."""
    deployment.expect_errors("malformed payload, not run")
    process, base = deployment.twistd("--app", APP, "--topic", "work", "--concurrency", "3")
    process.wait_healthy(base)
    r = client(redis_server.url)
    r.lpush(key("work", "queue"), "not json")
    wait_for(lambda: r.llen(key("work", "dead")) == 1, 10, "the dead letter")
    assert r.lrange(key("work", "dead"), 0, -1) == ["not json"]
    [record] = records(r, "work", "errors")
    assert record["message"] == "not json"
    assert record["error"].startswith("malformed payload, not run")
    assert r.hlen(key("work", "runs")) == 0
    every_loop_serves(deployment, base, r, 3)
    assert "stopped unexpectedly" not in process.output
    assert process.terminate() == 0


def test_result_with_tuple_keys_is_an_error_and_the_loop_goes_on(deployment: Deployment,
                                                                 redis_server: RedisServer) -> None:
    """A handler returning a dict with tuple keys is recorded as an error saying its result cannot be stored,
    and the loop goes on."""
    deployment.expect_errors("handler for work failed on SMtuple")
    process, base = deployment.twistd("--app", APP, "--topic", "work", "--concurrency", "2")
    process.wait_healthy(base)
    r = client(redis_server.url)
    send(base, "work", "SMtuple", "t tuple")
    wait_for(lambda: r.llen(key("work", "dead")) == 1, 10, "the dead letter")
    [record] = records(r, "work", "errors")
    assert record["message"]["sid"] == "SMtuple"
    assert "the handler's result cannot be stored as JSON" in record["error"]
    assert records(r, "work", "complete") == []
    every_loop_serves(deployment, base, r, 2)
    assert "stopped unexpectedly" not in process.output
    assert process.terminate() == 0


def test_redis_refusing_writes_for_a_while_stops_no_loop(deployment: Deployment, redis_server: RedisServer) -> None:
    """While Redis answers writes with OOM errors the loop keeps trying, warning once, the heartbeat still beats
    (its script starts with an EXPIRE, which OOM does not refuse), and the waiting message completes after."""
    env = deployment.env(PYROWIRE_HEARTBEAT_TTL=QUICK_HEARTBEAT)  # a beat every 0.7 s: one falls in the outage
    process, base = deployment.twistd("--app", APP, "--topic", "work", "--concurrency", "1", env=env)
    process.wait_healthy(base)
    r = client(redis_server.url)
    send(base, "work", "SMfirst", "first sleep=0.5", number="+15553100001")
    send(base, "work", "SMwaiting", "waiting", number="+15553100002")
    wait_runs(deployment, "work", 1, timeout=10, finished=False)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1")
    try:
        # the first message finishes; the loop's next take is refused, the heartbeat is not
        process.wait_log("taking from work failed, retrying: ", timeout=10)
        time.sleep(1.5)  # two beats of 0.7 s while Redis refuses writes
        assert sids(records(r, "work", "complete")) == ["SMfirst"]
        assert r.llen(key("work", "queue")) == 1
    finally:
        r.config_set("maxmemory", "0")
    wait_for(lambda: "SMwaiting" in sids(records(r, "work", "complete")), 15, "the waiting message to complete")
    output = process.output
    assert output.count("OOM command not allowed") == 1  # one line from the loop
    assert "heartbeat refused" not in output
    assert "stopped unexpectedly" not in output
    assert process.terminate() == 0


def test_message_that_kills_its_worker_is_run_max_attempts_plus_two_times(deployment: Deployment,
                                                                         redis_server: RedisServer) -> None:
    """A handler that SIGKILLs its own process is run max_attempts + 2 times (3, with max_attempts 1) across
    restarted workers, then dead-lettered with a record saying the worker died while handling it."""
    deployment.expect_errors("the worker died while handling it")
    # a heartbeat of 1 s: each death is seen within about 1.3 s (a spurious one would change no count here)
    web, base, workers = web_and_quick_workers(deployment, "work", 2, heartbeat="1")
    send(base, "work", "SMdie", "d die")
    r = client(redis_server.url)
    deadline = time.monotonic() + 30
    while r.llen(key("work", "dead")) == 0:
        assert time.monotonic() < deadline, "timed out waiting for the dead letter"
        if sum(w.process.poll() is None for w in workers) < 2:  # one was killed by the message: start another
            workers.append(quick_worker(deployment, "work", heartbeat="1"))
        time.sleep(0.05)
    found = runs(deployment, "work")
    assert [run.sid for run in found] == ["SMdie"] * 3
    assert len({run.pid for run in found}) == 3
    assert sorted(w.process.returncode for w in workers if w.process.poll() is not None) == [-9, -9, -9]
    [record] = records(r, "work", "errors")
    assert record["error"] == "the worker died while handling it (3 runs started, max_attempts 1)"
    assert sids(records(r, "work", "dead")) == ["SMdie"]
    assert r.hlen(key("work", "runs")) == 0
    for worker in workers:
        if worker.process.poll() is None:
            assert worker.terminate() == 0
    assert web.terminate() == 0


def test_a_retry_leaves_the_slot_and_its_attempts_survive_a_restart(deployment: Deployment,
                                                                    redis_server: RedisServer) -> None:
    """With --concurrency 1, a message waiting for its retry leaves the loop to another sender's message, and its
    attempts survive a worker restart: with max_attempts 3 it ends dead after exactly three runs."""
    deployment.expect_errors("handler for retry3 failed on SMfails")
    first, base = deployment.twistd("--app", APP, "--topic", "retry3", "--concurrency", "1")
    first.wait_healthy(base)
    r = client(redis_server.url)
    send(base, "retry3", "SMfails", "f fail", number="+15553200001")
    send(base, "retry3", "SMmeanwhile", "m", number="+15553200002")
    wait_for(lambda: r.llen(key("retry3", "errors")) == 2, 10, "two failed runs")
    assert first.terminate() == 0  # the third run is due 2 s after the second
    assert r.zcard(key("retry3", "schedule")) == 1
    assert r.hget(key("retry3", "runs"), "SMfails") == "2"
    second, _ = deployment.twistd("--app", APP, "--topic", "retry3", "--concurrency", "1")
    wait_for(lambda: r.llen(key("retry3", "dead")) == 1, 10, "the dead letter")
    run1, other, run2, run3 = runs(deployment, "retry3")
    assert (run1.sid, other.sid, run2.sid, run3.sid) == ("SMfails", "SMmeanwhile", "SMfails", "SMfails")
    assert other.end is not None and other.end < run2.start
    assert run2.start - run1.start >= 1.0  # the first retry waits a second
    assert [run.pid for run in (run1, run2, run3)] == [first.process.pid] * 2 + [second.process.pid]
    assert [e["attempt"] for e in records(r, "retry3", "errors")] == [1, 2, 3]
    assert sids(records(r, "retry3", "complete")) == ["SMmeanwhile"]
    assert r.hlen(key("retry3", "runs")) == 0
    assert second.terminate() == 0


def test_a_refused_send_the_handler_did_not_await_makes_the_run_an_error(deployment: Deployment,
                                                                         redis_server: RedisServer) -> None:
    """A 2014-style handler (``app.sms(message); return message``) whose send Twilio refuses with 21211 is
    recorded as an error carrying 21211, not as complete, and no Deferred is left with an unhandled error."""
    deployment.expect_errors("handler for legacy failed on SMlegacy")
    process, base = deployment.twistd("--app", APP, "--topic", "legacy")
    process.wait_healthy(base)
    fake_control(deployment, "fail", {"status": 400, "count": 1, "code": 21211,
                                      "message": "Invalid 'To' Phone Number"})
    r = client(redis_server.url)
    send(base, "legacy", "SMlegacy", "hello")
    wait_for(lambda: r.llen(key("legacy", "dead")) == 1, 10, "the dead letter")
    [record] = records(r, "legacy", "errors")
    assert "21211" in record["error"] and "Invalid 'To' Phone Number" in record["error"]
    assert records(r, "legacy", "complete") == []
    assert deployment.twilio.messages() == []
    assert process.terminate() == 0
    assert "Unhandled error in Deferred" not in process.output


def test_a_stopping_worker_takes_nothing_more(deployment: Deployment, redis_server: RedisServer) -> None:
    """A message pushed right after SIGTERM reached a worker with parked loops stays queued while it drains, and
    the next worker handles it as its first attempt."""
    web, base = deployment.twistd("--app", APP, "--role", "web")
    web.wait_healthy(base)
    start = ["--app", APP, "--role", "worker", "--topic", "work", "--concurrency", "3", "--grace", "10"]
    stopping, _ = deployment.twistd(*start)
    me = worker_id(stopping, "work")
    r = client(redis_server.url)
    send(base, "work", "SMbusy", "b sleep=1.5", number="+15553300001")  # keeps it draining for a while
    wait_runs(deployment, "work", 1, timeout=10, finished=False)
    wait_for(lambda: int(r.info("clients")["blocked_clients"]) == 2, 10, "the two other loops to park")
    stopping.process.terminate()
    stopping.wait_log("waiting up to 10.0s for 1 work handlers", timeout=5)
    send(base, "work", "SMlate", "l", number="+15553300002")
    assert stopping.process.poll() is None
    assert sids(records(r, "work", "queue")) == ["SMlate"]
    assert stopping.process.wait(15) == 0  # drained: the busy message completed
    assert r.llen(key("work", "queue")) == 1
    assert r.llen(key("work", f"inflight:{me}")) == 0
    assert r.hget(key("work", "runs"), "SMlate") is None  # never begun
    assert sids(records(r, "work", "complete")) == ["SMbusy"]
    following, _ = deployment.twistd(*start)
    wait_for(lambda: len(records(r, "work", "complete")) == 2, 10, "the late message to complete")
    late = records(r, "work", "complete")[1]
    assert late["message"]["sid"] == "SMlate" and late["attempt"] == 1 and late["worker"] != me
    assert following.terminate() == 0
    assert web.terminate() == 0


def test_a_message_stranded_in_a_live_workers_in_flight_list_is_swept_back(deployment: Deployment,
                                                                           redis_server: RedisServer) -> None:
    """A message in a live worker's in-flight list that none of its loops holds is put back by its sweep and
    handled, without restarting the process."""
    env = deployment.env(PYROWIRE_HEARTBEAT_TTL=QUICK_HEARTBEAT)
    process, base = deployment.twistd("--app", APP, "--topic", "work", env=env)
    process.wait_healthy(base)
    me = worker_id(process, "work")
    r = client(redis_server.url)
    r.lpush(key("work", f"inflight:{me}"), envelope("work", "SMstranded", "stranded", "+15553400001"))
    wait_for(lambda: records(r, "work", "complete"), 10, "the stranded message to complete")
    [record] = records(r, "work", "complete")
    assert record["message"]["sid"] == "SMstranded"
    assert record["worker"] == me and record["attempt"] == 1
    assert "put back 1 work messages in flight here that no handler held" in process.output
    assert r.llen(key("work", f"inflight:{me}")) == 0
    assert process.process.poll() is None
    assert process.terminate() == 0


def test_dead_requeue_moves_thousands_of_dead_letters_in_batches(deployment: Deployment,
                                                                 redis_server: RedisServer) -> None:
    """`pyrowire dead requeue` moves 3,000 dead letters of 30 senders back, a batch per script, each sender's
    oldest first in line and the others waiting in their conversation, oldest next."""
    r = client(redis_server.url)
    count, senders = 3000, 30
    numbers = [f"+155540{i:05d}" for i in range(senders)]
    # LPUSH puts the newest at the head, as FINISH does
    r.lpush(key("work", "dead"), *(envelope("work", f"SMdead{i}", f"d{i}", numbers[i % senders])
                                   for i in range(count)))
    r.hset(key("work", "runs"), mapping={f"SMdead{i}": "1" for i in range(count)})
    r.config_resetstat()
    done = subprocess.run([PYROWIRE, "dead", "requeue", "work", "--app", APP], cwd=deployment.dir,
                          env=deployment.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "requeued 3000 dead letters of work"
    assert r.llen(key("work", "dead")) == 0
    assert r.hlen(key("work", "runs")) == 0
    stats = r.info("commandstats")
    scripts = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("eval", "evalsha"))
    assert scripts >= count // 100
    # in line: each sender's oldest letter, in the order they died; behind each, the sender's others, oldest next
    assert sids(records(r, "work", "queue")) == [f"SMdead{i}" for i in range(senders)]
    assert r.smembers(key("work", "active")) == set(numbers)
    assert sids(records(r, "work", f"conv:{numbers[7]}")) == [f"SMdead{i}" for i in range(7 + senders, count, senders)]


def test_a_webhook_while_redis_refuses_writes_gets_the_error_response(deployment: Deployment,
                                                                      redis_server: RedisServer) -> None:
    """While Redis refuses writes (out of memory) a webhook is answered 200 with the topic's error_response,
    said once in the log, nothing is queued and no traceback is written; once Redis takes writes again
    the same MessageSid is accepted and handled."""
    deployment.expect_errors("Redis refused to queue a message, answering error_response")
    process, base = deployment.twistd("--app", APP, "--topic", "work", "--concurrency", "1")
    process.wait_healthy(base)
    r = client(redis_server.url)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1")
    try:
        for _ in range(2):
            status, answer = send_webhook(base, "work", webhook_params("SMrefused", "refused", number="+15553200001"))
            assert status == 200 and "error has occurred" in answer, answer
        assert r.llen(key("work", "queue")) == 0 and r.get(key("work", "seen:SMrefused")) is None
    finally:
        r.config_set("maxmemory", "0")
    send(base, "work", "SMrefused", "refused", number="+15553200001")
    wait_for(lambda: "SMrefused" in sids(records(r, "work", "complete")), 15, "the message to complete")
    output = process.output
    assert output.count("refused to queue a message") == 1
    assert "Traceback" not in output and "webhook failed" not in output
    assert process.terminate() == 0

"""Scaling out (SPEC section 11): two ``--role web`` and two ``--role worker`` processes on one real Redis.

Everything goes in through HTTP, spread over both web processes, and comes out at the fake
Twilio; the app is tests/process/apps/scale_app.py (one ordered topic paced at 5 segments a
second, a handler counting in the session).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

from tests.process.harness import Deployment, request, send_webhook, wait_for, webhook_params
from tests.process.records import Run, client, key, records, runs, send, sids, wait_runs, worker_id
from tests.redis_server import RedisServer

APP, TOPIC = "scale_app", "scale"
MPS = 5  # the topic's twilio.mps (apps/scale_app.py)
SENDERS, EACH = 4, 5
GREAT = "<Message>Great, we'll get right back to you.</Message>"


def both_at_once(bases: list[str], sid: str, number: str) -> list[tuple[int, str]]:
    """The same webhook (a Twilio retry) posted to every web process at the same moment."""
    start = threading.Barrier(len(bases))

    def post(base: str) -> tuple[int, str]:
        start.wait(5)
        return send_webhook(base, TOPIC, webhook_params(sid, f"{sid} once", number=number))

    with ThreadPoolExecutor(len(bases)) as pool:
        return list(pool.map(post, bases))


def webhooks_counted(base: str, outcome: str) -> float:
    """``pyrowire_webhooks_total{topic="scale", outcome=...}`` of one web process."""
    status, _, body = request("GET", f"{base}/metrics")
    assert status == 200
    found = re.search(rf'^pyrowire_webhooks_total{{(?=[^}}]*outcome="{outcome}")(?=[^}}]*topic="{TOPIC}")[^}}]*}}'
                      r" (\S+)$", body.decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def ends(deployment: Deployment) -> dict[str, Any]:
    """MessageSid -> the SID ``app.sms`` fired with in the handler's finished run (None when suppressed)."""
    path = deployment.dir / "markers" / f"{TOPIC}.jsonl"
    marks = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {m["sid"]: m["reply"] for m in marks if m["event"] == "end"}


def check_paced(arrived: list[float]) -> None:
    """No second holds more than the burst (MPS) plus MPS more; the whole took at least the pace's time."""
    arrived = sorted(arrived)
    for i, first in enumerate(arrived):
        in_a_second = [t for t in arrived[i:] if t < first + 1.0 - 0.05]
        assert len(in_a_second) <= 2 * MPS, ("more than the pace allows in one second", arrived)
    assert arrived[-1] - arrived[0] >= (len(arrived) - MPS) / MPS - 0.5, ("sent faster than the pace", arrived)


def test_two_web_and_two_worker_processes_share_the_work(deployment: Deployment,
                                                         redis_server: RedisServer) -> None:
    """Two web and two worker processes on one Redis: a MessageSid posted to both webs at once is queued once and
    answered alike; four senders' texts, alternating between the webs, run in order per sender on both workers
    with their sessions counting 1 to 5 across them; the replies keep the topic's pace of 5 a second; STOP
    through one web suppresses the replies either worker sends; and every message has exactly one record."""
    webs = [deployment.twistd("--app", APP, "--role", "web") for _ in range(2)]
    workers = [deployment.twistd("--app", APP, "--role", "worker", "--concurrency", "4")[0] for _ in range(2)]
    bases = [base for _, base in webs]
    for web, base in webs:
        web.wait_healthy(base)
    for worker in workers:
        worker_id(worker, TOPIC)
    pids = {worker.process.pid: worker for worker in workers}

    # de-duplication: three Twilio retries, each reaching both web processes at the same moment
    twice = [f"SMtwice{i}" for i in range(3)]
    for i, sid in enumerate(twice):
        answers = both_at_once(bases, sid, f"+1555710000{i}")
        assert answers[0] == answers[1] and answers[0][0] == 200 and GREAT in answers[0][1], answers
    assert sum(webhooks_counted(base, "duplicate") for base in bases) == len(twice)
    assert sum(webhooks_counted(base, "queued") for base in bases) == len(twice)

    # opt-out: STOP through the first web process
    stopped = "+15557200000"
    status, answer = send_webhook(bases[0], TOPIC, webhook_params("SMstop", "STOP", number=stopped))
    assert status == 200 and answer.endswith("<Response/>"), answer

    # conversations: message m of sender s through web process (s + m) mod 2
    numbers = [f"+155573{s:05d}" for s in range(SENDERS)]
    accepted = [*twice, "SMstop"]
    for m in range(EACH):
        for s, number in enumerate(numbers):
            send(bases[(s + m) % 2], TOPIC, f"SMs{s}m{m}", f"s{s}m{m}", number=number)
            accepted.append(f"SMs{s}m{m}")

    # the opted-out number texts on, through the other web process, until both workers have answered it
    suppressed: list[Run] = []
    for m in range(12):
        sid = f"SMstopped{m}"
        send(bases[(m + 1) % 2], TOPIC, sid, f"after stop {m}", number=stopped)
        accepted.append(sid)
        wait_for(lambda sid=sid: sid in ends(deployment), 10, f"the handler to finish {sid}")
        suppressed = [run for run in runs(deployment, TOPIC) if run.number == stopped]
        if {run.pid for run in suppressed} == set(pids):
            break
    assert {run.pid for run in suppressed} == set(pids), "one worker handled every text of the opted-out number"

    replies = deployment.twilio.wait_messages(len(twice) + SENDERS * EACH, timeout=20)
    found = wait_runs(deployment, TOPIC, len(accepted) - 1, timeout=10)  # STOP is not the handler's

    # order and sessions: each sender's texts one at a time, in order, counting 1..5 across both workers
    assert {run.pid for run in found} == set(pids), "a worker process did no work"
    spanned = 0
    for s, number in enumerate(numbers):
        mine = [run for run in found if run.number == number]
        assert [run.body for run in mine] == [f"s{s}m{m}" for m in range(EACH)]
        for earlier, later in pairwise(mine):
            assert earlier.end is not None and earlier.end <= later.start
        assert [m["body"] for m in replies if m["to"] == number] == [f"s{s}m{m} #{m + 1}" for m in range(EACH)]
        spanned += len({run.pid for run in mine}) == 2
    r = client(redis_server.url)
    assert all(json.loads(r.get(key(TOPIC, f"session:{n}")) or "{}") == {"count": EACH} for n in numbers)
    assert spanned >= 1, "no conversation moved between the workers"

    # pacing: every reply (from both workers) at the fake Twilio within the topic's mps
    assert {pids[run.pid] for run in found if run.number != stopped} == set(workers)
    check_paced([m["received_at"] for m in replies])

    # opt-out: the stopped number's texts were handled by both workers, and nothing reached it
    assert all(ends(deployment)[run.sid] is None for run in suppressed)
    assert [m for m in deployment.twilio.messages() if m["to"] == stopped] == []

    # records: exactly one complete per accepted message, nothing else left anywhere
    wait_for(lambda: r.llen(key(TOPIC, "complete")) >= len(accepted), 10, "every complete record")
    assert Counter(sids(records(r, TOPIC, "complete"))) == Counter(accepted)
    assert r.llen(key(TOPIC, "errors")) == 0 and r.llen(key(TOPIC, "queue")) == 0
    assert r.scard(key(TOPIC, "active")) == 0

    for process in [*workers, *(web for web, _ in webs)]:
        assert process.terminate() == 0

"""Reading what the queueing app (apps/queueing.py) and the daemons left behind: marks, records, Redis.

The process tests of the queue and of conversations look at three things: the marks the
handler appends per run (``start`` and ``end`` lines), the records and lists the daemons
keep in Redis (read with redis-py, which the tests may use and the daemon never does),
and the daemons' logs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from tests.process.harness import Deployment, PyrowireProcess, send_webhook, wait_for, webhook_params

APP = "queueing"
# a few seconds of heartbeat instead of 15: crash recovery within about 3 s, the sweep within about 2 s
QUICK_HEARTBEAT = "2"


def client(url: str) -> redis.Redis:
    """A plain synchronous client of the tests' Redis, answering str."""
    return redis.Redis.from_url(url, decode_responses=True)


def key(topic: str, name: str) -> str:
    return f"pyrowire:{{{topic}}}:{name}"


def records(r: redis.Redis, topic: str, kind: str) -> list[dict[str, Any]]:
    """A list of a topic decoded, oldest (or next to run) first: ``complete`` or ``errors`` records, ``dead``
    letters, the ``queue``, a ``conv:<number>``."""
    return [json.loads(raw) for raw in reversed(r.lrange(key(topic, kind), 0, -1))]


def sids(found: Iterable[dict[str, Any]]) -> list[str]:
    """The inbound MessageSids of records or envelopes (both hold the message)."""
    return [str(item["message"]["sid"]) for item in found]


def envelope(topic: str, sid: str, body: str, number: str) -> str:
    """A payload as the webhook queues it, for pushing straight into Redis."""
    message = {"message": body, "number": number, "sid": sid, "topic": topic, "to": "+15005550006",
               "from_city": None, "from_state": None, "from_country": None, "from_zip": None,
               "media": {"count": 0, "media": {}}, "reply": None}
    return json.dumps({"message": message, "received_at": time.time()})


def worker_id(process: PyrowireProcess, topic: str) -> str:
    """The worker id a daemon announced in its "worker ... serving" line."""
    process.wait_log(" serving ")
    found = re.search(rf"worker (\S+) serving [^\n]*\b{re.escape(topic)}\b", process.output)
    assert found, process.output
    return found.group(1)


def quick_worker(deployment: Deployment, topic: str, heartbeat: str = QUICK_HEARTBEAT) -> PyrowireProcess:
    """Start a worker process of ``topic`` whose heartbeat lasts ``heartbeat`` seconds."""
    env = deployment.env(PYROWIRE_HEARTBEAT_TTL=heartbeat)
    return deployment.twistd("--app", APP, "--role", "worker", "--topic", topic, env=env)[0]


def web_and_quick_workers(deployment: Deployment, topic: str, count: int, heartbeat: str = QUICK_HEARTBEAT,
                          ) -> tuple[PyrowireProcess, str, list[PyrowireProcess]]:
    """A web process (and its base URL) and ``count`` quick-heartbeat workers of ``topic``, all serving."""
    web, base = deployment.twistd("--app", APP, "--role", "web")
    workers = [quick_worker(deployment, topic, heartbeat) for _ in range(count)]
    web.wait_healthy(base)
    for worker in workers:
        worker_id(worker, topic)
    return web, base, workers


def send(base: str, topic: str, sid: str, body: str, number: str = "+15551230000") -> None:
    """Text ``body`` to ``topic`` as ``number``; it must be accepted."""
    status, answer = send_webhook(base, topic, webhook_params(sid, body, number=number))
    assert status == 200 and "Great" in answer, answer


@dataclass(frozen=True)
class Run:
    """One run of the queueing app's handler, from its marks: ``end`` is None when it never returned."""

    sid: str
    number: str
    body: str
    pid: int
    start: float
    end: float | None


def runs(deployment: Deployment, topic: str) -> list[Run]:
    """The handler's runs on ``topic``, in the order they started."""
    path = deployment.dir / "markers" / f"{topic}.jsonl"
    if not path.exists():
        return []
    found: list[Run] = []
    open_runs: dict[tuple[str, int], int] = {}  # (sid, pid) -> index of its unfinished run
    for line in path.read_text().splitlines():
        mark = json.loads(line)
        if mark["event"] == "start":
            open_runs[(mark["sid"], mark["pid"])] = len(found)
            found.append(Run(mark["sid"], mark["number"], mark["body"], mark["pid"], mark["at"], None))
        else:
            i = open_runs.pop((mark["sid"], mark["pid"]))
            found[i] = Run(**{**found[i].__dict__, "end": mark["at"]})
    return sorted(found, key=lambda run: run.start)


def wait_runs(deployment: Deployment, topic: str, count: int, timeout: float, finished: bool = True) -> list[Run]:
    """Wait until ``count`` runs on ``topic`` have started (and, with ``finished``, all returned)."""

    def enough() -> list[Run] | None:
        found = runs(deployment, topic)
        done = all(run.end is not None for run in found) if finished else True
        return found if len(found) >= count and done else None

    result: list[Run] = wait_for(enough, timeout, f"{count} runs of the {topic} handler")
    return result


def most_at_once(intervals: Iterable[tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals going on at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def finished(found: Iterable[Run]) -> list[tuple[float, float]]:
    """The (start, end) of the runs that returned."""
    return [(run.start, run.end) for run in found if run.end is not None]

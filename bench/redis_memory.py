"""Redis memory benchmark: bytes of Redis memory per queued message, per record, per conversation, per seen MessageSid.

    python bench/redis_memory.py [--runs 3] [--messages 10000]

Real processes of the bench app on one Redis (``--save "" --appendonly no``): ``--role web`` takes
``--messages`` signed webhooks for topic ``echo0`` (each from a sender of its own, 4 keep-alive
connections), with no worker running, so they stay queued; then ``--role worker --topic echo0``
handles them all (a reply each through the fake Twilio, a complete record each). Redis's
``used_memory`` is read before, after the webhooks and after the drain; ``MEMORY USAGE`` (exact,
``SAMPLES 0``) splits the first step between the queue, the active set and the seen keys. Sessions
are written as the FINISH script writes them (``SET`` with a TTL), a JSON of 33 bytes, for as many
conversations; the delivery records of as many outbound messages through the real STATUS script
(callbacks ``queued``, ``sent``, ``delivered`` each). One JSON line: bytes per item (median of the
runs) and the totals.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Redis,
    active_key,
    base_parser,
    bench,
    complete_key,
    emit,
    note,
    queue_key,
    require_cores,
    sender_number,
    signed_webhook,
    summarise,
    wait_for,
)
from pyrowire.keys import DELIVERY_SECONDS
from pyrowire.scripts import STATUS
from pyrowire.status import rank

TOPIC = "echo0"
CONNECTIONS = 4
SESSION = '{"count":3,"step":"ask-for-name"}'  # 33 bytes: a small conversation state


def used(redis: Redis) -> int:
    return int(redis.info("memory")["used_memory"])


def usage(redis: Redis, key: str) -> int:
    return int(redis.call("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)


def record_statuses(redis: Redis, count: int) -> None:
    """``queued``, ``sent`` and ``delivered`` callbacks for ``count`` outbound SIDs, through the STATUS script
    as pyrowire/status.py calls it (no on_status hook, nobody opted out)."""
    base = f"pyrowire:{{{TOPIC}}}"
    for start in range(0, count, 500):
        commands = []
        for i in range(start, min(count, start + 500)):
            sid = f"SMout{i:029d}"
            for status in ("queued", "sent", "delivered"):
                event = json.dumps({"status": status, "error_code": None, "at": time.time(),
                                    "to": sender_number(i, 0)})
                commands.append(("EVAL", STATUS.source, 4, f"{base}:delivery:{sid}", f"{base}:events:{sid}",
                                 f"{base}:statuses", f"{base}:optout", status, rank(status), "", event,
                                 DELIVERY_SECONDS, "", "", ""))
        redis.pipeline(commands)


def post_all(base: str, count: int, run: int) -> None:
    """``count`` signed webhooks, each from its own sender, on CONNECTIONS keep-alive connections."""
    url = f"{base}/queue/{TOPIC}"
    port = int(base.rsplit(":", 1)[1])

    def post(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(offset, count, CONNECTIONS):
            sig, body = signed_webhook(url, f"SMmem{run}x{i:026d}", f"hello there number {i}", sender_number(i, 0))
            conn.request("POST", f"/queue/{TOPIC}", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                           "X-Twilio-Signature": sig})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"webhook {i} answered {answer.status}")
        conn.close()

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        list(pool.map(post, range(CONNECTIONS)))


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    require_cores()
    n = args.messages
    runs: list[dict[str, Any]] = []
    with bench("redis-memory", args.keep) as b:
        redis = b.redis()
        twilio = b.fake_twilio()
        for run in range(args.runs):
            note(f"run {run + 1}/{args.runs}: {n} webhooks, then the drain")
            redis.flush()
            twilio.clear()
            web, base = b.pyrowire(redis, twilio.url, "--role", "web", name="web")
            assert base is not None
            time.sleep(0.5)
            empty = used(redis)
            post_all(base, n, run)
            queued = used(redis)
            queue, active = usage(redis, queue_key(TOPIC)), usage(redis, active_key(TOPIC))
            seen = queued - empty - queue - active
            one_seen = usage(redis, f"pyrowire:{{{TOPIC}}}:seen:SMmem{run}x{0:026d}")
            worker, _ = b.pyrowire(redis, twilio.url, "--role", "worker", "--topic", TOPIC, name="worker")
            wait_for(lambda: redis.llen(complete_key(TOPIC)) >= n, 600, f"{n} completes", 0.05, worker)
            b.stop(worker)
            b.stop(web)
            drained = used(redis)
            complete = usage(redis, complete_key(TOPIC))
            # the worker's registration, heartbeat and in-flight keys are gone or tiny; what grew is the records
            redis.pipeline([("SET", f"pyrowire:{{{TOPIC}}}:session:{sender_number(i, 0)}", SESSION, "EX", "86400")
                            for i in range(n)])
            sessions = used(redis) - drained
            before_statuses = used(redis)
            record_statuses(redis, n)
            statuses = used(redis) - before_statuses
            runs.append({
                "queued_message_bytes": queue / n, "active_entry_bytes": active / n, "seen_key_bytes": seen / n,
                "seen_key_usage_bytes": one_seen,
                "webhook_total_bytes": (queued - empty) / n, "record_bytes": complete / n,
                "records_10k_mb": complete / n * 10_000 / 2**20, "after_drain_bytes": (drained - empty) / n,
                "session_bytes": sessions / n, "delivery_bytes": statuses / n, "used_memory_empty_mb": empty / 2**20,
                "used_memory_queued_mb": queued / 2**20, "used_memory_drained_mb": drained / 2**20})
    keys = list(runs[0])
    emit({"scenario": "redis-memory", "messages": n, "topic": TOPIC, "runs": args.runs,
          "session_json_bytes": len(SESSION), **summarise(runs, keys, digits=1)})


if __name__ == "__main__":
    main()

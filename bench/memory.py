"""Soak-memory benchmark: 100,000 messages through ``--role all``; RSS at 10k and at 100k.

    /tmp/venv/bin/python bench/memory.py [--runs 3] [--messages 100000]

``twistd -n pyrowire --role all --topic echo0`` (core 0, default concurrency) takes signed
webhooks from bench/sender.py (core 1: 8 keep-alive connections, as fast as answered, never
more than 500 messages ahead of the completed ones, so the backlog lives briefly in Redis and
the process is measured in steady state) and replies to each through the fake Twilio.
The process's VmRSS is read when a tenth of the messages have completed and again after the
last one; VmHWM is the peak.  One JSON line: RSS at both points, growth between them, peak,
throughput, and the targets (peak <= 60 MB, growth <= 10%).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BENCH,
    LOAD_CORE,
    base_parser,
    bench,
    complete_key,
    emit,
    note,
    require_cores,
    rss_mb,
    summarise,
    verdict,
)

RSS_TARGET, GROWTH_TARGET = 60.0, 0.10
TOPIC = "echo0"


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    require_cores()
    checkpoint = args.messages // 10
    runs = []
    with bench("memory", args.keep) as b:
        redis = b.redis()
        twilio = b.fake_twilio()
        for run in range(args.runs):
            note(f"run {run + 1}/{args.runs}: {args.messages} messages")
            redis.flush()
            twilio.clear()
            proc, base = b.pyrowire(redis, twilio.url, "--role", "all", "--topic", TOPIC)
            start_rss = rss_mb(proc.pid)["rss_mb"]
            out = b.dir / f"sender-{run}.json"
            key = complete_key(TOPIC)
            started = time.monotonic()
            sender = b.python("sender", BENCH / "sender.py",
                              ["--url", f"{base}/queue/{TOPIC}", "--out", str(out), "--count", str(args.messages),
                               "--window", "500", "--progress-redis", str(redis.port), key,
                               "--sid-prefix", f"SMmem{run}"], core=LOAD_CORE)
            at_checkpoint = None
            done = 0
            deadline = time.monotonic() + 3600
            while done < args.messages:
                if sender.process.poll() not in (None, 0):
                    raise RuntimeError(f"the sender failed:\n{sender.tail()}")
                if proc.process.poll() is not None:
                    raise RuntimeError(f"pyrowire exited:\n{proc.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {done} of {args.messages} completed in an hour")
                done = redis.llen(key)
                if at_checkpoint is None and done >= checkpoint:
                    at_checkpoint = rss_mb(proc.pid)["rss_mb"]
                    at_checkpoint_done = done
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            time.sleep(0.5)  # let the last replies' buffers go
            end = rss_mb(proc.pid)
            sender.process.wait(60)
            b.stop(sender)
            sent = json.loads(out.read_text())
            b.stop(proc)
            runs.append({"rss_start_mb": start_rss, "rss_at_checkpoint_mb": at_checkpoint,
                         "checkpoint_completed": at_checkpoint_done, "rss_at_end_mb": end["rss_mb"],
                         "peak_rss_mb": end["peak_rss_mb"],
                         "growth": (end["rss_mb"] - at_checkpoint) / at_checkpoint if at_checkpoint else None,
                         "completed": done, "non_200": sent["non_200"], "msg_s": done / elapsed})
    s = summarise(runs, ["rss_start_mb", "rss_at_checkpoint_mb", "rss_at_end_mb", "peak_rss_mb", "growth",
                         "completed", "non_200", "msg_s"])
    emit({"scenario": "soak-memory", "system": "pyrowire --role all", "messages": args.messages,
          "checkpoint": checkpoint, "runs": args.runs, **s,
          "target": f"peak RSS <= {RSS_TARGET} MB, RSS growth checkpoint->end <= {GROWTH_TARGET:.0%}",
          "target_met": {"peak_rss": verdict(s["peak_rss_mb"], RSS_TARGET, at_least=False),
                         "growth": verdict(s["growth"], GROWTH_TARGET, at_least=False)}})


if __name__ == "__main__":
    main()

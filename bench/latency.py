"""Latency benchmark: webhook sent -> reply arrived at the fake Twilio, through ``--role all`` at 200/s.

    /tmp/venv/bin/python bench/latency.py [--runs 3] [--duration 10] [--rate 200]

``twistd -n pyrowire --role all --topic latency`` (core 0) serves the webhook and runs the
worker (default concurrency).  bench/sender.py (core 1, with Redis and the fake Twilio)
sends signed webhooks at a fixed rate, each Body carrying ``time.time()`` at send; the
handler replies with the body; the fake Twilio's ``received_at`` minus that time is the
latency of the whole path (webhook, validators, Redis queue, worker, REST reply).  One JSON
line: latency p50/p99/max, webhook answer p50/p99, peak RSS (VmHWM) of the pyrowire
process, and the targets (p50 <= 2 ms, p99 <= 5 ms, peak RSS <= 60 MB).
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
    CpuMeter,
    base_parser,
    bench,
    emit,
    note,
    percentile,
    require_cores,
    rss_mb,
    summarise,
    verdict,
    wait_for,
)

P50_TARGET, P99_TARGET, RSS_TARGET = 2.0, 5.0, 60.0


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], duration=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    require_cores()
    runs = []
    with bench("latency", args.keep) as b:
        redis = b.redis()
        twilio = b.fake_twilio()
        for run in range(args.runs):
            note(f"run {run + 1}/{args.runs}")
            redis.flush()
            twilio.clear()
            proc, base = b.pyrowire(redis, twilio.url, "--role", "all", "--topic", "latency")
            out = b.dir / f"sender-{run}.json"
            meter = CpuMeter({"sut": proc.pid})
            sender = b.python("sender", BENCH / "sender.py",
                              ["--url", f"{base}/queue/latency", "--out", str(out), "--rate", str(args.rate),
                               "--duration", str(args.duration), "--warmup", str(args.warmup),
                               "--sid-prefix", f"SMlat{run}"], core=LOAD_CORE)
            sender.process.wait(args.duration + args.warmup + 60)
            b.stop(sender)
            if not out.exists():
                raise RuntimeError(f"the sender failed:\n{sender.tail()}")
            sent = json.loads(out.read_text())

            def replies(sent: dict = sent) -> list[dict]:
                got = [m for m in twilio.messages() if (m["body"] or "").startswith("t ")]
                return got if len(got) >= sent["measured"] else []

            try:
                messages = wait_for(replies, 30, "every reply at the fake Twilio", 0.2)
            except RuntimeError:
                messages = [m for m in twilio.messages() if (m["body"] or "").startswith("t ")]
            cpu = meter.read()
            memory = rss_mb(proc.pid)
            latencies = [(m["received_at"] - float(m["body"].split()[1])) * 1000 for m in messages]
            b.stop(proc)
            runs.append({"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                         "max_ms": max(latencies, default=None), "replies": len(messages),
                         "sent": sent["measured"], "non_200": sent["non_200"],
                         "webhook_answer_p50_ms": sent["answer_p50_ms"], "webhook_answer_p99_ms": sent["answer_p99_ms"],
                         "send_late_p99_ms": sent["late_p99_ms"], "peak_rss_mb": memory["peak_rss_mb"],
                         "rss_mb": memory["rss_mb"], **cpu})
            time.sleep(0.3)
    s = summarise(runs, ["p50_ms", "p99_ms", "max_ms", "sent", "replies", "non_200", "webhook_answer_p50_ms",
                         "webhook_answer_p99_ms", "send_late_p99_ms", "peak_rss_mb", "rss_mb", "cpu_sut"])
    emit({"scenario": "latency", "system": "pyrowire --role all", "rate": args.rate, "duration_s": args.duration,
          "runs": args.runs, **s,
          "target": f"p50 <= {P50_TARGET} ms, p99 <= {P99_TARGET} ms, peak RSS <= {RSS_TARGET} MB",
          "target_met": {"p50": verdict(s["p50_ms"], P50_TARGET, at_least=False),
                         "p99": verdict(s["p99_ms"], P99_TARGET, at_least=False),
                         "peak_rss": verdict(s["peak_rss_mb"], RSS_TARGET, at_least=False)}})


if __name__ == "__main__":
    main()

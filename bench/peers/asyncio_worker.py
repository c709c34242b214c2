"""The asyncio peer of pyrowire's worker: the same job, written as a careful asyncio user would.

    PEER_PYTHON asyncio_worker.py --redis-port RPORT --twilio URL --topic T [--concurrency 64]
                                  [--delay-ms 0 | --jitter-ms 25,75 --seed 13]

uvloop, redis.asyncio (with hiredis when installed) and aiohttp. ``concurrency`` tasks,
each: ``BLMOVE`` queue -> its worker's in-flight list (reliable: a message taken is in
Redis until it is finished), decode the JSON envelope, run the echo handler (which waits
the simulated I/O, then POSTs the reply to the Twilio Messages URL with basic auth and a
form body, and reads the answer's sid), then one round trip (MULTI/EXEC) that pushes the
exchange's record on the topic's ``complete`` list, trims it to ``--retention`` and removes
the message from in-flight. Keys are pyrowire's, under the worker id ``peer``.

What it does not do, that pyrowire's worker does: conversations (one message per sender at
a time, in order; the next one handed on), sessions, counting runs before they start, dead
letters and retries, remembering sends so that a re-run does not send twice, opt-out,
pacing, recovery of a dead worker's in-flight messages, heartbeats, metrics, logs, graceful
stop. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
import zlib

import aiohttp
import redis.asyncio as aioredis
import uvloop

ACCOUNT = "ACbench000000000000000000000000000"
TOKEN = "bench-auth-token-0123456789"
FROM = "+15005550006"


def jitter_ms(sid: str, low: float, high: float, seed: int) -> float:
    """The simulated I/O of message ``sid``: uniform in [low, high] ms, the same for every system (see bench/app)."""
    return random.Random(seed * 1_000_003 + zlib.crc32(sid.encode())).uniform(low, high)


async def main(args: argparse.Namespace) -> None:
    base = f"pyrowire:{{{args.topic}}}"
    queue, inflight, complete = f"{base}:queue", f"{base}:inflight:peer", f"{base}:complete"
    url = f"{args.twilio}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    # one connection per parked BLMOVE, a few more for the finishing transactions
    redis = aioredis.Redis(host="127.0.0.1", port=args.redis_port, decode_responses=True,
                           max_connections=args.concurrency + 16)
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.concurrency), auth=aiohttp.BasicAuth(ACCOUNT, TOKEN),
        headers={"Accept": "application/json"})
    low, high = (float(x) for x in args.jitter_ms.split(",")) if args.jitter_ms else (0.0, 0.0)
    fixed = args.delay_ms / 1000.0

    async def echo(message: dict) -> dict:
        delay = jitter_ms(message["sid"], low, high, args.seed) / 1000.0 if args.jitter_ms else fixed
        if delay:
            await asyncio.sleep(delay)
        form = {"To": message["number"], "From": FROM, "Body": message["message"]}
        async with http.post(url, data=form) as response:
            answer = await response.json()
            if response.status >= 300:
                raise RuntimeError(f"Twilio answered {response.status}: {answer}")
        return {"result": message, "sids": [answer["sid"]]}

    async def loop() -> None:
        while True:
            payload = await redis.blmove(queue, inflight, 5, "RIGHT", "LEFT")
            if payload is None:
                continue
            envelope = json.loads(payload)
            message = envelope["message"]
            started = time.time()
            outcome = await echo(message)
            record = json.dumps({"message": message, **outcome, "worker": "peer", "received_at":
                                 envelope.get("received_at"), "started_at": started, "finished_at": time.time()})
            async with redis.pipeline(transaction=True) as pipe:
                pipe.lpush(complete, record).ltrim(complete, 0, args.retention - 1).lrem(inflight, 1, payload)
                await pipe.execute()

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(loop()) for _ in range(args.concurrency)]
    waiting = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.close()
    await redis.aclose()
    for task in done:
        if task is not waiting:
            task.result()  # a loop that failed: its exception ends the process


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--twilio", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", default="", help="LOW,HIGH: each message's delay drawn from it (seeded)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--retention", type=int, default=1_000_000)
    uvloop.run(main(parser.parse_args()))

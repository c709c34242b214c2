"""Drain ceiling: the minimal worker loop, with no framework around it.

    python bench/ceilings/drain_loop.py --redis-port RPORT --twilio URL --topic T [--concurrency 64]
                                        [--delay-ms 0 | --jitter-ms 25,75 --seed 13]

``concurrency`` loops, each on its own Redis connection: BLMOVE queue -> inflight, parse
the JSON message, wait ``delay-ms`` (simulated I/O, as the echo50 handler; with
``--jitter-ms`` a delay drawn per message from its sid, as the echoj handler), POST the reply
to the fake Twilio's Messages URL with treq and basic auth (persistent pool, 64 per host,
as pyrowire's client), read the JSON answer's sid, then one round trip (a Lua script, as
pyrowire's finish) doing LREM inflight + LPUSH complete.  Keys are pyrowire's, under the
worker id ``ceiling``.  Runs until SIGTERM.
"""

import argparse
import json
import random
import zlib

import treq
import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool

ACCOUNT = "ACbench000000000000000000000000000"
TOKEN = "bench-auth-token-0123456789"
FROM = "+15005550006"
FINISH = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""


def jitter_ms(sid, low, high, seed):
    return random.Random(seed * 1_000_003 + zlib.crc32(sid.encode())).uniform(low, high)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--twilio", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", default="", help="LOW,HIGH: each message's delay drawn from it (seeded)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--nodelay", action="store_true",
                        help="diagnostic: set TCP_NODELAY on the HTTP client connections (pyrowire does not)")
    args = parser.parse_args()
    if args.nodelay:
        from twisted.internet import tcp

        connected = tcp.Client._connectDone

        def _connect_done(self):
            connected(self)
            self.setTcpNoDelay(True)

        tcp.Client._connectDone = _connect_done

    base = f"pyrowire:{{{args.topic}}}"
    queue, inflight, complete = f"{base}:queue", f"{base}:inflight:ceiling", f"{base}:complete"
    url = f"{args.twilio}/2010-04-01/Accounts/{ACCOUNT}/Messages.json".encode()
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 64
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    shared = txredisapi.lazyConnectionPool("127.0.0.1", args.redis_port, poolsize=4, convertNumbers=False)
    delay = args.delay_ms / 1000.0
    low, high = (float(x) for x in args.jitter_ms.split(",")) if args.jitter_ms else (0.0, 0.0)

    async def loop():
        conn = txredisapi.lazyConnectionPool("127.0.0.1", args.redis_port, poolsize=1, convertNumbers=False,
                                             replyTimeout=None)
        while True:
            payload = await conn.execute_command("BLMOVE", queue, inflight, "RIGHT", "LEFT", 5)
            if payload is None:
                continue
            message = json.loads(payload)["message"]
            if args.jitter_ms:
                await deferLater(reactor, jitter_ms(message["sid"], low, high, args.seed) / 1000.0)
            elif delay:
                await deferLater(reactor, delay)
            response = await http.post(url, data=[("To", message["number"]), ("From", FROM),
                                                  ("Body", message["message"])],
                                       auth=(ACCOUNT, TOKEN), headers={b"Accept": [b"application/json"]})
            sid = json.loads(await response.content())["sid"]
            record = json.dumps({"message": message, "sids": [sid]})
            await shared.eval(FINISH, [inflight, complete], [payload, record])

    for _ in range(args.concurrency):
        Deferred.fromCoroutine(loop()).addErrback(lambda f: (print(f.getTraceback(), flush=True), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main()

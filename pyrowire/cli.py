"""The ``pyrowire`` console command.

``pyrowire dead list|requeue TOPIC [--redis URL] [--prefix P]`` lists or re-queues a
topic's dead letters. Every command runs on the reactor (``task.react``) and talks to
Redis through the same store the daemon uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react

from pyrowire.errors import ConfigurationError, RedisUnavailable
from pyrowire.runconfig import RedisAddress, parse_redis_url
from pyrowire.store import RedisStore

CONNECT_SECONDS = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyrowire", description="pyrowire's command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    dead = commands.add_parser("dead", help="list or re-queue a topic's dead letters")
    dead.add_argument("action", choices=("list", "requeue"))
    dead.add_argument("topic")
    dead.add_argument("--redis", help="Redis URL (default $REDIS_URL, else the embedded server of this folder)")
    dead.add_argument("--prefix", default="pyrowire", help="the deployment's key prefix (default pyrowire)")
    return parser


def redis_address(url: str | None, environ: Mapping[str, str], cwd: str) -> RedisAddress:
    """The Redis to use: --redis, else $REDIS_URL, else the embedded server running in ``cwd``."""
    url = url or environ.get("REDIS_URL") or "embedded"
    if url == "embedded":
        return RedisAddress("unix", path=os.path.join(cwd, ".pyrowire", "redis", "redis.sock"))
    return parse_redis_url(url)


async def connected_store(reactor: Any, address: RedisAddress, prefix: str) -> RedisStore:
    store = RedisStore(address, prefix=prefix)
    store.start()
    deadline = reactor.seconds() + CONNECT_SECONDS
    while not store.connected:
        if reactor.seconds() >= deadline:
            await store.stop()
            raise ConfigurationError("--redis", f"cannot reach Redis at {address.display()}")
        await deferLater(reactor, 0.05)
    return store


def describe_dead_letter(raw: str) -> str:
    """One readable line for a dead letter: its sid, sender, time received and text."""
    try:
        envelope = json.loads(raw)
        message = envelope["message"]
        received = envelope.get("received_at")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(received)) if received else "-"
        return f"{message.get('sid')}  {message.get('number')}  {when}  {json.dumps(message.get('message'))}"
    except (ValueError, KeyError, TypeError):
        return f"(unreadable) {raw[:80]!r}"


async def dead(reactor: Any, args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    store = await connected_store(reactor, redis_address(args.redis, environ, os.getcwd()), args.prefix)
    try:
        if args.action == "list":
            letters = await store.lrange(store.keys(args.topic).dead)
            for raw in reversed(letters):  # oldest first
                out.write(describe_dead_letter(raw) + "\n")
            out.write(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''} in {args.topic}\n")
        else:
            n = await store.requeue_dead(args.topic)
            out.write(f"requeued {n} dead letter{'s' if n != 1 else ''} of {args.topic}\n")
    finally:
        await store.stop()
    return 0


async def run(reactor: Any, argv: Sequence[str], environ: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    args = _parser().parse_args(list(argv))
    try:
        if args.command == "dead":
            return await dead(reactor, args, environ, out)
    except (ConfigurationError, RedisUnavailable) as e:
        err.write(f"pyrowire: error: {e}\n")
        return 1
    return 2


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``pyrowire`` console command."""
    arguments = sys.argv[1:] if argv is None else list(argv)

    def go(reactor: Any) -> Deferred[None]:
        async def body() -> None:
            code = await run(reactor, arguments, os.environ, sys.stdout, sys.stderr)
            if code:
                raise SystemExit(code)

        return Deferred.fromCoroutine(body())

    react(go)

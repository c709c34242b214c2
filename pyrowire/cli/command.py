"""The ``pyrowire`` console command.

``pyrowire init [DIR]`` writes a new application (see :mod:`pyrowire.cli.scaffold`);
``pyrowire send URL --from N --body T [--wait]`` and ``pyrowire chat URL --from N``
text a running app as a phone would (see :mod:`pyrowire.cli.phone`);
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import deferLater, react
from twisted.web.client import Agent

from pyrowire.cli import phone, scaffold
from pyrowire.errors import ConfigurationError, RedisUnavailable
from pyrowire.redis_store import RedisStore
from pyrowire.runconfig import RedisAddress, parse_redis_url

CONNECT_SECONDS = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyrowire", description="pyrowire's command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    dead = commands.add_parser("dead", help="list or re-queue a topic's dead letters")
    dead.add_argument("action", choices=("list", "requeue"))
    dead.add_argument("topic")
    dead.add_argument("--redis", help="Redis URL (default $REDIS_URL, else the embedded server of this folder)")
    dead.add_argument("--prefix", default="pyrowire", help="the deployment's key prefix (default pyrowire)")

    init = commands.add_parser("init", help="write a new, working pyrowire application")
    init.add_argument("directory", nargs="?", default=".", help="where to write it (default: here)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")

    send = commands.add_parser("send", help="text a pyrowire webhook as Twilio would, and print the answer")
    _phone_arguments(send)
    send.add_argument("--body", required=True, help="the text of the message")
    send.add_argument("--media", action="append", default=[], metavar="URL", help="a media URL (repeatable)")
    send.add_argument("--raw", action="store_true", help="also print the raw TwiML answer")
    send.add_argument("--wait", nargs="?", type=_seconds, const=phone.WAIT_SECONDS, default=None,
                      metavar="SECONDS", help="also print the sandbox replies, waiting up to SECONDS (default 10)")

    chat = commands.add_parser("chat", help="a phone in the terminal: each line read is texted to the webhook")
    _phone_arguments(chat)
    chat.add_argument("--wait", type=_seconds, default=phone.WAIT_SECONDS, metavar="SECONDS",
                      help="how long to wait for the replies to each line (default 10)")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 86400:
        raise argparse.ArgumentTypeError(f"out of range: {text!r}")
    return value


def _phone_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the webhook URL, http://HOST:PORT/queue/TOPIC")
    parser.add_argument("--from", dest="sender", required=True, metavar="NUMBER", help="the sender's number")
    parser.add_argument("--to", default=phone.DEFAULT_TO, metavar="NUMBER",
                        help=f"the Twilio number texted (default {phone.DEFAULT_TO})")
    parser.add_argument("--auth-token", help="sign with this auth token (default $TWILIO_AUTH_TOKEN)")
    parser.add_argument("--timeout", type=_seconds, default=phone.HTTP_TIMEOUT, metavar="SECONDS",
                        help="how long to wait for the webhook's answer (default 10)")
    parser.add_argument("--redis", help="Redis URL for the replies (default $REDIS_URL, else this folder's embedded)")
    parser.add_argument("--prefix", default="pyrowire", help="the deployment's key prefix (default pyrowire)")


def redis_address(url: str | None, environ: Mapping[str, str], cwd: str) -> RedisAddress:
    """The Redis to use: --redis, else $REDIS_URL, else the embedded server running in ``cwd``."""
    url = url or environ.get("REDIS_URL") or "embedded"
    if url == "embedded":
        return RedisAddress("unix", path=os.path.join(cwd, ".pyrowire", "redis", "redis.sock"))
    return parse_redis_url(url)


async def connected_store(reactor: Any, address: RedisAddress, prefix: str,
                          factory: Callable[..., RedisStore] = RedisStore) -> RedisStore:
    store = factory(address, prefix=prefix)
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


def init(args: argparse.Namespace, out: phone.Output) -> int:
    written = scaffold.write(args.directory, force=args.force)
    out.write(f"wrote {', '.join(written)} in {args.directory}\n")
    where = "" if args.directory == "." else f"cd {args.directory} && "
    url = f"http://localhost:{scaffold.PORT}/queue/{scaffold.TOPIC}"
    out.write(f"run it:  {where}twistd -n pyrowire --app app\n")
    out.write(f"text it: pyrowire send {url} --from +15551234567 --body hi --wait\n")
    return 0


class Effects:
    """What ``send`` and ``chat`` touch, injectable: the HTTP client, the outbox store (or how to
    connect one), the input lines and the folder whose embedded Redis is the default."""

    def __init__(self, http: Any = None, outbox: phone.Outbox | None = None,
                 next_line: Callable[[], Deferred[str | None]] | None = None, cwd: str | None = None,
                 store_factory: Callable[..., RedisStore] = RedisStore) -> None:
        self.http = http
        self.outbox = outbox
        self.next_line = next_line
        self.cwd = cwd
        self.store_factory = store_factory


async def _talk(reactor: Any, args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, err: TextIO,
                effects: Effects) -> int:
    http = effects.http or HTTPClient(Agent(reactor))
    waits = args.command == "chat" or args.wait is not None
    outbox, store = effects.outbox, None
    if waits and outbox is None:
        phone.topic_of(args.url)  # a bad URL is reported before connecting to Redis
        address = redis_address(args.redis, environ, effects.cwd or os.getcwd())
        outbox = store = await connected_store(reactor, address, args.prefix, effects.store_factory)
    try:
        talker = phone.Phone(args.url, args.sender, http=http, clock=reactor, to=args.to,
                             auth_token=args.auth_token or environ.get("TWILIO_AUTH_TOKEN") or None,
                             account_sid=environ.get("TWILIO_ACCOUNT_SID") or phone.DEFAULT_ACCOUNT_SID,
                             timeout=args.timeout, outbox=outbox)
        if args.command == "chat":
            return await _chat(reactor, talker, args, out, err, effects)
        waited = await phone.converse(talker, args.body, out, media=args.media, raw=args.raw, wait=args.wait)
        if waited is not None:
            problem = phone.wait_problem(waited, "the message", args.wait)
            if problem:
                err.write(f"pyrowire: error: {problem}\n")
                return 1
        return 0
    finally:
        if store is not None:
            await store.stop()


async def _chat(reactor: Any, talker: phone.Phone, args: argparse.Namespace, out: TextIO, err: TextIO,
                effects: Effects) -> int:
    if effects.next_line is not None:
        return await phone.chat(talker, effects.next_line, out, err, wait=args.wait)
    from twisted.internet.stdio import StandardIO

    terminal = phone.Terminal()
    StandardIO(terminal, reactor=reactor)  # stdin and stdout through the reactor: reading never blocks it
    try:
        echo = not os.isatty(0)  # piped input is not shown by a terminal: show it with the answers
        return await phone.chat(talker, terminal.next_line, terminal, err, wait=args.wait, echo=echo)
    finally:
        if terminal.transport is not None:
            terminal.transport.loseConnection()  # flushes what is still to be written, then closes
        try:
            await terminal.closed.addTimeout(CONNECT_SECONDS, reactor)
        except TimeoutError:
            pass


async def run(reactor: Any, argv: Sequence[str], environ: Mapping[str, str], out: TextIO, err: TextIO,
              effects: Effects | None = None) -> int:
    args = _parser().parse_args(list(argv))
    try:
        if args.command == "dead":
            return await dead(reactor, args, environ, out)
        if args.command == "init":
            return init(args, out)
        if args.command in ("send", "chat"):
            return await _talk(reactor, args, environ, out, err, effects or Effects())
    except (ConfigurationError, RedisUnavailable, phone.PhoneError, scaffold.WouldOverwrite, OSError) as e:
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

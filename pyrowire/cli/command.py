"""The ``pyrowire`` console command.

``pyrowire init [DIR]`` writes a new application (see :mod:`pyrowire.cli.scaffold`);
``pyrowire send URL --from N --body T [--wait]`` and ``pyrowire chat URL --from N``
text a running app as a phone would (see :mod:`pyrowire.cli.phone`);
``pyrowire dead list|requeue TOPIC`` lists or re-queues a topic's dead letters. ``dead``
reads the app's settings as the daemon does (``--app``, ``--profile``, ``--redis``; see
:mod:`pyrowire.cli.deployment`) and talks to Redis through the same store the daemon uses;
``send --wait`` and ``chat`` read the replies from the daemon over HTTP, so they need no
Redis. Every command runs on the reactor (``task.react``).
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
from twisted.internet.task import react
from twisted.web.client import Agent

from pyrowire.cli import deployment, phone, scaffold
from pyrowire.errors import ConfigurationError, RedisUnavailable
from pyrowire.redis_store import RedisStore
from pyrowire.version import __version__

CLOSE_SECONDS = 5.0

DESCRIPTION = """pyrowire's command-line tools: write a new application, text a running one as a phone
would, and manage dead letters. The daemon itself (webhook and workers) runs under twistd:

  twistd -n pyrowire --app app      (its options: twistd pyrowire --help)"""

DEAD_DESCRIPTION = """List or re-queue the dead letters of a topic: the messages whose handler failed
max_attempts times. The app's settings (--app, default app in this folder) say which topics
exist and where the daemon's Redis is, as they do for twistd pyrowire."""

DEAD_EPILOG = """arguments of list and requeue (details: pyrowire dead list --help):
  TOPIC                a topic of the app
  --app MODULE[:ATTR]  the application (default $PYROWIRE_APP, else app in this folder)
  --profile NAME       which entry of PROFILES (default $ENV, else dev)
  --redis URL          the daemon's Redis (default $REDIS_URL, else the profile's)
  --prefix P           the key prefix (default the profile's key_prefix)"""


def _deployment_options() -> argparse.ArgumentParser:
    """The options that say which deployment's Redis to use (dead's list and requeue)."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("where the daemon's Redis is (default: what the app's settings say)")
    group.add_argument("--app", metavar="MODULE[:ATTR]",
                       help="the application, as for twistd pyrowire (default $PYROWIRE_APP, else app in this folder)")
    group.add_argument("--profile", metavar="NAME", help="which entry of PROFILES (default $ENV, else dev)")
    group.add_argument("--redis", metavar="URL",
                       help="the Redis URL (default $REDIS_URL, else the profile's; embedded is this folder's server)")
    group.add_argument("--prefix", metavar="P", help="the key prefix (default the profile's key_prefix, else pyrowire)")
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyrowire", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pyrowire {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{init,send,chat,dead}")
    where = _deployment_options()

    init = commands.add_parser("init", help="write a new, working pyrowire application",
                               description="Write app.py, settings.py, Procfile, requirements.txt, test_app.py "
                                           "and .gitignore: an app that runs with twistd -n pyrowire --app app.")
    init.add_argument("directory", nargs="?", default=".", help="where to write it (default: here)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")

    send = commands.add_parser("send",
                               help="text a pyrowire webhook as Twilio would, and print the TwiML it answers",
                               description="Post a Twilio-signed webhook and print the TwiML document the webhook "
                                           "answered; with --wait, then the replies the handler sent, read from "
                                           "the daemon (URL/replies) until it has handled the message.")
    _phone_arguments(send)
    send.add_argument("--body", required=True, help="the text of the message")
    send.add_argument("--media", action="append", default=[], metavar="URL", help="a media URL (repeatable)")
    send.add_argument("--wait", nargs="?", type=_seconds, const=phone.WAIT_SECONDS, default=None,
                      metavar="SECONDS",
                      help="also print the replies (sandbox or real) until the message is handled, waiting up to "
                           "SECONDS (default 10)")

    chat = commands.add_parser("chat",
                               help="a phone in the terminal: each line read is texted to the webhook",
                               description="Text the webhook one line at a time, printing the answer and "
                                           "the replies to each, until the end of input.")
    _phone_arguments(chat)
    chat.add_argument("--wait", type=_seconds, default=phone.WAIT_SECONDS, metavar="SECONDS",
                      help="how long to wait for the replies to each line (default 10)")

    dead = commands.add_parser("dead", help="list or re-queue a topic's dead letters", description=DEAD_DESCRIPTION,
                               epilog=DEAD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = dead.add_subparsers(dest="action", required=True, metavar="{list,requeue}")
    listing = actions.add_parser("list", parents=[where], help="print the topic's dead letters, oldest first",
                                 description="Print each dead letter of TOPIC, oldest first: its MessageSid, "
                                             "sender, time received and text; then how many there are.")
    listing.add_argument("topic", metavar="TOPIC", help="a topic of the app")
    requeue = actions.add_parser("requeue", parents=[where],
                                 help="move the topic's dead letters back to its queue",
                                 description="Move every dead letter of TOPIC back to its queue, to be handled "
                                             "again (each with max_attempts afresh).")
    requeue.add_argument("topic", metavar="TOPIC", help="a topic of the app")
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


def locate(args: argparse.Namespace, environ: Mapping[str, str], cwd: str) -> deployment.Deployment:
    """The deployment the command's --app, --profile, --redis and --prefix name."""
    return deployment.locate(args.app, args.profile, args.redis, args.prefix, environ, cwd)


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


async def dead(reactor: Any, args: argparse.Namespace, environ: Mapping[str, str], out: TextIO,
               effects: Effects) -> int:
    where = locate(args, environ, effects.cwd or os.getcwd())
    where.check_topic(args.topic)
    store = await deployment.connect(reactor, where, effects.store_factory, effects.probe)
    try:
        if args.action == "list":
            letters = await store.lrange(store.keys(args.topic).dead)
            for raw in reversed(letters):  # oldest first
                out.write(describe_dead_letter(raw) + "\n")
            out.write(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''} in {args.topic}\n")
        else:
            n = await store.requeue_dead(args.topic, where.ordered(args.topic))
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
    """What the commands touch, injectable: the HTTP client, how to connect a store (and probe its address
    first), the input lines and the folder whose app and embedded Redis are the default."""

    def __init__(self, http: Any = None, next_line: Callable[[], Deferred[str | None]] | None = None,
                 cwd: str | None = None, store_factory: Callable[..., RedisStore] = RedisStore,
                 probe: deployment.Probe | None = deployment._probe) -> None:
        self.http = http
        self.next_line = next_line
        self.cwd = cwd
        self.store_factory = store_factory
        self.probe = probe


async def _talk(reactor: Any, args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, err: TextIO,
                effects: Effects) -> int:
    http = effects.http or HTTPClient(Agent(reactor))
    talker = phone.Phone(args.url, args.sender, http=http, clock=reactor, to=args.to,
                         auth_token=args.auth_token or environ.get("TWILIO_AUTH_TOKEN") or None,
                         account_sid=environ.get("TWILIO_ACCOUNT_SID") or phone.DEFAULT_ACCOUNT_SID,
                         timeout=args.timeout)
    if args.command == "chat":
        return await _chat(reactor, talker, args, out, err, effects)
    waited = await phone.converse(talker, args.body, out, media=args.media, twiml=True, wait=args.wait)
    if waited is not None:
        problem = phone.wait_problem(waited, "the message", args.wait)
        if problem:
            err.write(f"pyrowire: error: {problem}\n")
            return 1
    return 0


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
            await terminal.closed.addTimeout(CLOSE_SECONDS, reactor)
        except TimeoutError:
            pass


async def run(reactor: Any, argv: Sequence[str], environ: Mapping[str, str], out: TextIO, err: TextIO,
              effects: Effects | None = None) -> int:
    args = _parser().parse_args(list(argv))
    effects = effects or Effects()
    try:
        if args.command == "dead":
            return await dead(reactor, args, environ, out, effects)
        if args.command == "init":
            return init(args, out)
        if args.command in ("send", "chat"):
            return await _talk(reactor, args, environ, out, err, effects)
    except (ConfigurationError, RedisUnavailable, deployment.UnknownTopic, phone.PhoneError,
            scaffold.WouldOverwrite, OSError) as e:
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

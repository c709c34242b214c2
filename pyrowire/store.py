"""pyrowire's queue operations, written once over any Redis-speaking connection.

:class:`Store` holds every queue operation pyrowire performs, each one command or one
script of :mod:`pyrowire.scripts`. A subclass supplies only the connection: how one
command is executed (``_execute``), how a blocking pop is made (``popper``), and
whether it is connected. :class:`pyrowire.redis_store.RedisStore` does that with
txredisapi against a real server; :class:`pyrowire.testing.MemoryStore` with fakeredis
in-process. Importing this module imports neither.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from pyrowire import scripts
from pyrowire.keys import (
    DEDUPE_SECONDS,
    DELIVERY_SECONDS,
    FINISHED_DEAD,
    HEARTBEAT_TTL,
    INVALID,
    REPLIES_SECONDS,
    TopicKeys,
    read_seen,
    topic_keys,
)
from pyrowire.scripts import Script

# dead letters moved back per script run by requeue_dead
REQUEUE_BATCH = 100
# how many of a topic's newest error records are searched for why a message ended as a dead letter
ERRORS_SEARCHED = 200
# the minutes of handled counts kept for the console's chart
TALLY_MINUTES = 60


class ScriptMissing(Exception):
    """Redis answered NOSCRIPT: it does not hold the script (restarted, or SCRIPT FLUSH)."""


class Popper(Protocol):
    """A connection of its own that only does blocking pops."""

    @property
    def connected(self) -> bool: ...

    def pop(self, keys: TopicKeys, worker: str, timeout: float) -> Deferred[str | None]:
        """Move the oldest queued message into ``worker``'s in-flight list, waiting up to ``timeout`` s.

        Fires with the message, or None when the timeout passed first (0 waits for ever).
        """
        ...

    def execute(self, *command: Any) -> Awaitable[Any]:
        """Run one non-blocking command on this connection (as Store._execute does on the pool)."""
        ...

    def close(self) -> Deferred[None]: ...


@dataclass(frozen=True)
class Taken:
    """A message moved into a worker's in-flight list and begun: its run counted, its session read."""

    payload: str
    runs: int  # runs of it started so far, this one included
    session: str | None  # the conversation's stored session (JSON), if any
    opted_out: bool = False  # its sender had opted out of the topic when it was taken


@dataclass(frozen=True)
class SessionChange:
    """What FINISH does to the conversation's session: store ``value`` (JSON) or, when None, delete it."""

    value: str | None
    ttl: int


@dataclass(frozen=True)
class Replies:
    """What the handler of one inbound message sent so far, and whether its handling is finished.

    ``handled`` is true once the message was recorded complete or as a dead letter (a keyword such as
    STOP too: once the worker recorded it), and at once for a message a validator refused (nothing
    was queued; the TwiML answer was its one reply), which ``refused`` names. ``error`` is the error
    line of a message that ended as a dead letter. An unknown MessageSid is not handled, with no replies.
    """

    handled: bool
    replies: list[dict[str, Any]]  # each {"sid", "to", "body", "media": [urls], "status": str | None}
    refused: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Finishing:
    """One message for :meth:`Store.finish_many`: the arguments :meth:`Store.finish` takes for it."""

    payload: str
    sid: str
    record: str
    kind: str
    retention: int
    dead: bool = False
    conversation: str | None = None
    session: SessionChange | None = None
    replies: Mapping[int, str] | None = None  # send index -> details (JSON) not yet recorded by record_sent


def _pairs(reply: Any) -> dict[str, str]:
    """A HGETALL reply as a dict (a flat list from the wire, or already a dict)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply)
    return {str(k): str(v) for k, v in zip(items[::2], items[1::2], strict=True)}


class Store(ABC):
    """The queue operations pyrowire needs, over a connection a subclass provides.

    Every method raises :class:`~pyrowire.errors.RedisUnavailable` when Redis cannot be
    reached, and :class:`~pyrowire.errors.RedisReplyError` when it answers with an error.
    """

    prefix: str

    def keys(self, topic: str) -> TopicKeys:
        return topic_keys(self.prefix, topic)

    # --- what a subclass provides --------------------------------------------

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    @abstractmethod
    def stop(self) -> Deferred[None]:
        """Close the connections; from then on every operation raises RedisUnavailable."""

    @abstractmethod
    def popper(self) -> Popper:
        """A new connection for one worker loop's blocking pops."""

    @abstractmethod
    async def _execute(self, *command: Any) -> Any:
        """Run one command; raise ScriptMissing on NOSCRIPT, RedisReplyError on another error reply."""

    # --- built on it -----------------------------------------------------------

    async def _script(self, script: Script, keys: Sequence[str], args: Sequence[Any],
                      execute: Callable[..., Awaitable[Any]] | None = None) -> Any:
        """EVALSHA by the script's digest; EVAL (which also loads it) when Redis does not hold it.

        ``execute`` runs it on another connection (a popper's) instead of the store's own.
        """
        run = execute or self._execute
        try:
            return await run("EVALSHA", script.sha, len(keys), *keys, *args)
        except ScriptMissing:
            return await run("EVAL", script.source, len(keys), *keys, *args)

    async def ping(self) -> bool:
        return str(await self._execute("PING")) == "PONG"

    async def accept(self, topic: str, sid: str, answer: str, payload: str | None,
                     conversation: str | None = None, opt: str = "", sender: str = "") -> str | None:
        """Remember ``answer`` for ``sid`` and queue ``payload``, or return the earlier answer.

        With ``conversation`` (the sender, in an ordered topic) the message waits behind the
        conversation's message that is queued, in flight or scheduled, if there is one. ``opt``
        (``out`` or ``in``) opts ``sender`` out of the topic or back in, in the same step.
        """
        k = self.keys(topic)
        number = conversation or ""
        prior = await self._script(
            scripts.ACCEPT, (k.seen(sid), k.queue, k.active, k.conversation(number), k.optout),
            (answer, DEDUPE_SECONDS, payload or "", number, opt, sender))
        return None if prior is None else str(prior)

    async def take(self, popper: Popper, topic: str, worker: str) -> Taken | None:
        """Move the oldest ready message into the worker's in-flight list and begin it; None if none is ready.

        Runs on the popper's connection, so a worker loop needs no other to take work.
        """
        k = self.keys(topic)
        reply = await self._script(scripts.TAKE, (k.queue, k.inflight(worker), k.runs, k.optout), (k.session(""),),
                                   popper.execute)
        if reply is None:
            return None
        runs, opted_out, session, payload = reply
        return Taken(str(payload), int(runs), None if session is None else str(session), bool(int(opted_out)))

    async def take_many(self, popper: Popper, topic: str, worker: str, most: int) -> list[Taken]:
        """:meth:`take` for up to ``most`` ready messages in one round trip, oldest first; [] if none is ready."""
        k = self.keys(topic)
        reply = await self._script(scripts.TAKE_MANY, (k.queue, k.inflight(worker), k.runs, k.optout),
                                   (k.session(""), most), popper.execute)
        if reply is None:
            return []
        *heads, texts = reply
        data = texts.encode() if isinstance(texts, str) else bytes(texts)
        taken: list[Taken] = []
        at = 0
        for i in range(0, len(heads), 4):
            runs, opted_out, session_length, payload_length = (int(h) for h in heads[i:i + 4])
            session = None
            if session_length >= 0:
                session = data[at:at + session_length].decode()
                at += session_length
            payload = data[at:at + payload_length].decode()
            at += payload_length
            taken.append(Taken(payload, runs, session, bool(opted_out)))
        return taken

    async def begin(self, popper: Popper, topic: str, payload: str) -> Taken:
        """Begin a message a blocking pop moved in flight: count its run, read its session."""
        k = self.keys(topic)
        runs, session, opted_out = await self._script(scripts.BEGIN, (k.runs, k.optout), (k.session(""), payload),
                                                      popper.execute)
        return Taken(payload, int(runs), None if session is None else str(session), bool(int(opted_out)))

    async def finish(self, topic: str, worker: str, payload: str, sid: str, record: str, kind: str,
                     retention: int, dead: bool = False, conversation: str | None = None,
                     session: SessionChange | None = None, replies: Mapping[int, str] | None = None) -> bool:
        """Drop ``payload`` from the worker's in-flight list and record it under ``kind`` (complete or errors).

        With ``dead`` the message also goes to the dead letters; ``session`` changes the
        conversation's session; the conversation (if ordered) gets its next message; ``replies``
        (send index -> details, JSON) are the replies not yet recorded by :meth:`record_sent`, and
        the message is marked finished (:meth:`replies`). False when the payload was no longer in
        flight here (recorded, nothing else done).
        """
        return await self.finish_one(
            topic, worker, Finishing(payload, sid, record, kind, retention, dead, conversation, session, replies))

    async def finish_one(self, topic: str, worker: str, f: Finishing) -> bool:
        """:meth:`finish` for a message described by a :class:`Finishing`."""
        keys, args = self._finish_keys_args(topic, worker, f)
        return bool(int(await self._script(scripts.FINISH, keys, args)))

    def _finish_keys_args(self, topic: str, worker: str, f: Finishing) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """FINISH's KEYS and ARGV for one message."""
        k = self.keys(topic)
        number = f.conversation or ""
        change, value, ttl = "", "", 0
        if f.session is not None and f.session.value is not None:
            change, value, ttl = "set", f.session.value, f.session.ttl
        elif f.session is not None:
            change = "del"
        replies = "".join(f"{index}\n{details}\n" for index, details in f.replies.items()) if f.replies else ""
        return (
            (k.inflight(worker), getattr(k, f.kind), k.sent(f.sid), k.dead, k.runs, k.active, k.conversation(number),
             k.queue, k.session(number), k.seen(f.sid), k.replies(f.sid)),
            (f.payload, f.record, f.retention, "1" if f.dead else "", f.sid, number, change, value, ttl,
             REPLIES_SECONDS, replies),
        )

    async def finish_many(self, topic: str, worker: str, finishing: Sequence[Finishing]) -> list[bool | None]:
        """:meth:`finish` for several messages in one round trip; for each, whether it was still in flight
        here, or None when Redis refused one of its commands (finish that one again on its own)."""
        keys: list[str] = []
        args: list[Any] = []
        for f in finishing:
            k, a = self._finish_keys_args(topic, worker, f)
            keys += k
            args += a
        if not finishing:
            return []
        per = len(keys) // len(finishing), len(args) // len(finishing)
        replies = await self._script(scripts.FINISH_MANY, keys, (*per, *args))
        return [None if int(r) < 0 else bool(int(r)) for r in replies]

    async def retry(self, topic: str, worker: str, payload: str, record: str, retention: int, due: float) -> None:
        """Record a failed run and park the message until ``due`` (seconds, the clock's); its runs stay counted."""
        k = self.keys(topic)
        await self._script(scripts.RETRY, (k.inflight(worker), k.errors, k.schedule),
                           (payload, record, retention, repr(due)))

    async def due(self, topic: str, now: float, limit: int = 100) -> int:
        """Put the messages whose retry is due by ``now`` back to the front of the queue; how many."""
        k = self.keys(topic)
        return int(await self._script(scripts.DUE, (k.schedule, k.queue), (repr(now), limit)))

    async def sweep(self, topic: str, worker: str, payloads: Sequence[str]) -> int:
        """Put back these payloads of the worker's in-flight list (no handler of it holds them); how many."""
        if not payloads:
            return 0
        k = self.keys(topic)
        return int(await self._script(scripts.SWEEP, (k.inflight(worker), k.queue), tuple(payloads)))

    async def untake(self, topic: str, worker: str, payloads: Sequence[str]) -> int:
        """Put back messages taken into the worker's in-flight list but never started (oldest first), their
        runs no longer counted; how many were still in flight."""
        if not payloads:
            return 0
        k = self.keys(topic)
        return int(await self._script(scripts.UNTAKE, (k.inflight(worker), k.queue, k.runs), tuple(payloads)))

    async def session(self, topic: str, number: str) -> str | None:
        """The conversation's stored session (JSON), or None."""
        value = await self._execute("GET", self.keys(topic).session(number))
        return None if value is None else str(value)

    async def clear_session(self, topic: str, number: str) -> None:
        await self._execute("DEL", self.keys(topic).session(number))

    async def record_status(self, topic: str, sid: str, status: str, rank: int, error_code: str, event: str,
                            hook: tuple[str, str] | None = None, opt_out: str = "") -> tuple[bool, str | None]:
        """Keep a status callback of outbound ``sid``; (whether its status moved forward, the status before).

        ``hook`` is the on_status message's JSON text around its ``previous`` value, queued when the
        status moved; ``opt_out`` a number to opt out (Twilio's 21610) in the same step.
        """
        k = self.keys(topic)
        before, after = hook or ("", "")
        changed, previous = await self._script(
            scripts.STATUS, (k.delivery(sid), k.events(sid), k.queue, k.optout, k.delivered),
            (status, rank, error_code, event, DELIVERY_SECONDS, before, after, opt_out))
        return bool(int(changed)), None if previous is None else str(previous)

    async def delivery(self, topic: str, sid: str) -> tuple[dict[str, str], list[str]]:
        """An outbound message's delivery hash and its events (JSON), oldest first."""
        k = self.keys(topic)
        current = _pairs(await self._execute("HGETALL", k.delivery(sid)))
        events = [str(e) for e in await self._execute("LRANGE", k.events(sid), 0, -1)]
        return current, events

    async def pace(self, sender: str, rate: float, cost: int, now: float) -> float:
        """Take ``cost`` segments of ``sender``'s bucket (``rate`` a second, a second's worth of burst);
        the seconds to wait before sending, shared with every process on this Redis."""
        key = f"{self.prefix}:pace:{{{sender}}}"
        wait = await self._script(scripts.PACE, (key,), (repr(rate), repr(rate), cost, repr(now)))
        return float(wait)

    async def opted_out(self, topic: str, number: str) -> bool:
        """Whether ``number`` opted out of ``topic`` (STOP, or Twilio's error 21610)."""
        return bool(int(await self._execute("SISMEMBER", self.keys(topic).optout, number)))

    async def opt_out(self, topic: str, number: str) -> None:
        await self._execute("SADD", self.keys(topic).optout, number)

    async def record_sent(self, topic: str, sid: str, index: int, outbound: str, details: str = "") -> None:
        """Remember that the handler's ``index``-th send for inbound ``sid`` went out as ``outbound``, and
        the reply's ``details`` (JSON: sid, to, body, media) for :meth:`replies`."""
        k = self.keys(topic)
        await self._script(scripts.SENT, (k.sent(sid), k.replies(sid)), (index, outbound, DEDUPE_SECONDS, details))

    async def replies(self, topic: str, sid: str) -> Replies:
        """The replies the handler of inbound ``sid`` sent so far, in order, each with its delivery status,
        and whether its handling is finished (see :class:`Replies`)."""
        k = self.keys(topic)
        seen, items, statuses = await self._script(scripts.REPLIES, (k.seen(sid), k.replies(sid)), (k.delivery(""),))
        fields = [str(i) for i in items]
        found: list[tuple[int, dict[str, Any]]] = []
        for index, details, status in zip(fields[::2], fields[1::2], statuses, strict=True):
            try:
                reply = json.loads(details)
                position = int(index)
            except ValueError:
                continue
            if isinstance(reply, dict):
                found.append((position, {
                    "sid": reply.get("sid"), "to": reply.get("to"), "body": reply.get("body"),
                    "media": list(reply.get("media") or []), "status": None if status is None else str(status)}))
        ordered = [reply for _, reply in sorted(found, key=lambda f: f[0])]
        if seen is None:
            return Replies(False, ordered)
        answer, ending = read_seen(str(seen))
        if answer.startswith(INVALID):
            return Replies(True, ordered, refused=answer[len(INVALID):])
        if ending == FINISHED_DEAD:
            return Replies(True, ordered, error=await self._error_of(topic, sid))
        return Replies(bool(ending), ordered)

    async def _error_of(self, topic: str, sid: str) -> str:
        """The error line of inbound ``sid``'s newest error record, among the topic's newest ones."""
        for raw in await self.lrange(self.keys(topic).errors, 0, ERRORS_SEARCHED - 1):
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            message = record.get("message") if isinstance(record, dict) else None
            if isinstance(message, dict) and message.get("sid") == sid:
                return str(record.get("error") or "the handler failed")
        return "the handler failed"

    async def sent(self, topic: str, sid: str) -> dict[int, str]:
        """The sends already made for inbound ``sid``, by index."""
        found = _pairs(await self._execute("HGETALL", self.keys(topic).sent(sid)))
        return {int(k): v for k, v in found.items()}

    async def requeue_dead(self, topic: str, ordered: bool = True, batch: int = REQUEUE_BATCH) -> int:
        """Move every dead letter of ``topic`` back to the queue, ``batch`` per script; returns how many.

        Each batch is one short script, so re-queueing a long dead-letter list never stalls Redis.
        Only the letters there when it starts are moved.
        """
        k = self.keys(topic)
        remaining = await self.llen(k.dead)
        moved = 0
        while remaining > 0:
            n, _left = await self._script(scripts.REQUEUE, (k.dead, k.queue, k.runs, k.active),
                                          (min(batch, remaining), k.conversation(""), "1" if ordered else "",
                                           k.seen("")))
            if int(n) == 0:
                break
            moved += int(n)
            remaining -= int(n)
        return moved

    async def heartbeat(self, topics: Iterable[str], worker: str, ttl: int = HEARTBEAT_TTL) -> None:
        """Say this worker is alive for ``ttl`` seconds, for every topic it serves."""
        for topic in topics:  # one script per topic: a script's keys must share one Cluster slot
            k = self.keys(topic)
            await self._script(scripts.HEARTBEAT, (k.workers, k.alive(worker)), (worker, ttl))

    async def workers(self, topic: str) -> list[str]:
        """The worker ids that have taken messages of ``topic`` and were not reclaimed since."""
        members = await self._execute("SMEMBERS", self.keys(topic).workers)
        return sorted(str(m) for m in members)

    async def reclaim(self, topic: str, worker: str, force: bool = False) -> int:
        """Put a worker's in-flight messages back on the queue; -1 when it is alive and not forced."""
        k = self.keys(topic)
        n = await self._script(scripts.RECLAIM, (k.inflight(worker), k.queue, k.alive(worker), k.workers),
                               (worker, "force" if force else ""))
        return int(n)

    async def answer_for(self, topic: str, sid: str) -> str | None:
        """The answer remembered for inbound ``sid`` (``a`` accepted, ``v:<validator>`` refused), if any,
        without the mark FINISH appends when the message ends."""
        value = await self._execute("GET", self.keys(topic).seen(sid))
        return None if value is None else read_seen(str(value))[0]

    async def push_capped(self, key: str, item: str, retention: int) -> None:
        """Push ``item`` on the left of list ``key``, keeping its ``retention`` newest items."""
        await self._script(scripts.PUSH_CAPPED, (key,), (item, retention))

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[str]:
        return [str(i) for i in await self._execute("LRANGE", key, start, stop)]

    async def llen(self, key: str) -> int:
        return int(await self._execute("LLEN", key))

    async def ttl(self, key: str) -> int:
        """Seconds until ``key`` expires: -1 when it never does, -2 when it does not exist."""
        return int(await self._execute("TTL", key))

    # --- what the console reads and does: bounded ranges and counters, never KEYS or a whole list ----

    async def requeue_letter(self, topic: str, payload: str, ordered: bool = True) -> bool:
        """Move this one dead letter back to the queue (behind its conversation, if ordered); False if it
        was not a dead letter (any more)."""
        k = self.keys(topic)
        moved = await self._script(scripts.REQUEUE_ONE, (k.dead, k.queue, k.runs, k.active),
                                   (payload, k.conversation(""), "1" if ordered else "", k.seen("")))
        return bool(int(moved))

    async def discard_letter(self, topic: str, payload: str) -> bool:
        """Drop this one dead letter; False if it was not a dead letter (any more)."""
        return bool(int(await self._execute("LREM", self.keys(topic).dead, 1, payload)))

    async def tally(self, topic: str, minute: int, count: int) -> None:
        """Add ``count`` messages finished in ``minute`` (Unix seconds // 60) to the topic's last hour."""
        await self._script(scripts.TALLY, (self.keys(topic).minutes,), (minute, count, TALLY_MINUTES))

    async def handled_minutes(self, topic: str) -> dict[int, int]:
        """Messages finished per minute (Unix seconds // 60) over about the last hour."""
        found = _pairs(await self._execute("HGETALL", self.keys(topic).minutes))
        return {int(k): int(v) for k, v in found.items() if k.isdigit()}

    async def delivered(self, topic: str) -> dict[str, int]:
        """How many outbound messages of ``topic`` reached each delivery status (within the records' life)."""
        return {k: int(v) for k, v in _pairs(await self._execute("HGETALL", self.keys(topic).delivered)).items()}

    async def depths(self, topic: str) -> dict[str, int]:
        """How many messages of ``topic`` are queued, in flight (summed over its registered workers, live
        or not yet reclaimed) and dead: the metrics' gauges and the console's counts."""
        k = self.keys(topic)
        in_flight = 0
        for worker in await self.workers(topic):
            in_flight += await self.llen(k.inflight(worker))
        return {"queued": await self.llen(k.queue), "in_flight": in_flight, "dead": await self.llen(k.dead)}

    async def scheduled(self, topic: str) -> int:
        """How many messages of ``topic`` wait to be tried again."""
        return int(await self._execute("ZCARD", self.keys(topic).schedule))

    async def delivery_status(self, topic: str, sid: str) -> str | None:
        """An outbound message's current delivery status, or None when none was recorded."""
        value = await self._execute("HGET", self.keys(topic).delivery(sid), "status")
        return None if value is None else str(value)

    async def opted_out_sample(self, topic: str, limit: int = 100) -> tuple[int, list[str]]:
        """How many numbers opted out of ``topic``, and up to about ``limit`` of them (one SSCAN step)."""
        k = self.keys(topic)
        total = int(await self._execute("SCARD", k.optout))
        numbers: list[str] = []
        cursor = "0"
        while len(numbers) < limit:
            cursor, batch = await self._execute("SSCAN", k.optout, cursor, "COUNT", limit)
            numbers.extend(str(n) for n in batch)
            cursor = str(cursor)
            if cursor == "0":
                break
        return total, sorted(numbers[:limit])

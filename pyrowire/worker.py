"""Worker loops: each takes one message at a time from Redis and runs the topic's handler.

A message moves atomically from the topic's queue into this worker's in-flight list
(``TAKE``, or a parked ``BLMOVE`` then ``BEGIN`` when nothing is ready), and its run is
counted in Redis before the handler starts, so a SIGKILL at any point leaves it where
:mod:`pyrowire.recovery` finds it, with the run already counted. Finishing it (record,
dead letter, session, the conversation's next message) is one script; a failed run with
attempts left is parked in the topic's schedule, out of the loop, until it is due.

Nothing a message does can stop a loop: whatever fails is recorded, and a loop that ends
anyway is started again and counted (``restarts``, shown by ``/health``).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from pyrowire import envelope, logs
from pyrowire.calls import call_user
from pyrowire.errors import PyrowireError, RedisReplyError, RedisUnavailable
from pyrowire.redis_watch import explains
from pyrowire.retry import handler_delay, redis_delay
from pyrowire.settings import Topic
from pyrowire.store import Finishing, Popper, SessionChange, Taken

if TYPE_CHECKING:
    from pyrowire.outbound import Exchange
    from pyrowire.runtime import Runtime

T = TypeVar("T")

POP_TIMEOUT = 5
# runs a message may have beyond max_attempts when workers die under it: a SIGKILLed worker's message
# is run again (SPEC section 6) even with max_attempts 1, but one that kills every worker taking it
# is given up after max_attempts + CRASH_RERUNS runs
CRASH_RERUNS = 2
# at most this many completed messages finished in one round trip (FINISH_MANY)
FINISH_BATCH = 32
# at most this many messages taken in one round trip (TAKE_MANY), for as many loops waiting for one
TAKE_BATCH = 64
# while the queue is deep a worker keeps up to concurrency // PREFETCH_SHARE messages taken ahead (in its
# in-flight list, runs counted), so a loop that ends a message starts the next without a round trip
PREFETCH_SHARE = 4


def _observe(d: Deferred[Any]) -> Deferred[None]:
    """A Deferred that fires when ``d`` does, and whose cancellation leaves ``d`` running."""
    observer: Deferred[None] = Deferred()

    def fired(result: object) -> object:
        if not observer.called:
            observer.callback(None)
        return result

    d.addBoth(fired)
    return observer


def _json_default(value: Any) -> Any:
    return repr(value)


# built once: json.dumps(..., default=) would build a new encoder for every record
_RECORD_ENCODER = json.JSONEncoder(default=_json_default)
_SESSION_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _unencodable(value: Any, path: str) -> str | None:
    """Where in ``value`` JSON fails, as ``path['key']`` and the culprit's type, or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a key that is not a string ({key!r})"
            found = _unencodable(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _unencodable(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    return f"{path} is a {type(value).__name__}"


class SessionNotJSON(PyrowireError):
    """The handler left ``message['session']`` holding something JSON cannot store."""


class HandlingFailed(PyrowireError):
    """The run did not complete: the handler raised, a send it left behind failed, or its result or
    session cannot be stored. ``text`` is the record's error line, ``trace`` its traceback."""

    def __init__(self, text: str, trace: str, failure: Failure | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.trace = trace
        self.failure = failure


class TopicWorker(Service):
    """``concurrency`` loops for one topic, each on its own Redis connection."""

    log = Logger()

    def __init__(self, runtime: Runtime, topic: Topic, handler: Callable[..., Any], concurrency: int,
                 grace: float, on_opt_out: Callable[..., Any] | None = None,
                 on_status: Callable[..., Any] | None = None) -> None:
        self.runtime = runtime
        self.topic = topic
        self.handler = handler
        self.on_opt_out = on_opt_out
        self.on_status = on_status
        self.concurrency = concurrency
        self.grace = grace
        self.name = f"worker:{topic.name}"
        self.restarts = 0  # loops that ended unexpectedly and were started again
        # payloads this process holds: taken by a loop and not yet finished
        self.held: set[str] = set()
        self._sleeping: set[Deferred[Any]] = set()
        self._parked: dict[int, tuple[Popper, Deferred[str | None]]] = {}
        self._loops: list[Deferred[None]] = []
        self._handling: set[Deferred[None]] = set()
        self._poppers: list[Popper] = []
        # completed messages waiting for the finish under way, each with what its loop awaits
        self._finishing: list[tuple[Finishing, Deferred[bool | None]]] = []
        self._flushing = False
        # loops waiting for a message from the take under way (or the next), with their connections
        self._wanting: list[tuple[Popper, Deferred[Taken | None]]] = []
        self._taking = False
        self._takes: Deferred[None] | None = None  # the takes under way, until they end
        # messages taken ahead of the loops (oldest first), while the last take found the queue deep
        self.prefetch = concurrency // PREFETCH_SHARE
        self._ready: deque[Taken] = deque()
        self._deep = False
        self._gathering = False  # loops are being resumed together: let them all ask before taking

    @property
    def clock(self) -> IReactorTime:
        return self.runtime.clock

    @property
    def loops(self) -> int:
        """How many loops are running now."""
        return sum(1 for d in self._loops if not d.called)

    @property
    def busy(self) -> int:
        """How many messages are being handled now."""
        return len(self._handling)

    def startService(self) -> None:
        super().startService()
        for _ in range(self.concurrency):
            popper = self.runtime.store.popper()
            self._poppers.append(popper)
            self._loops.append(Deferred.fromCoroutine(self._supervise(popper)))

    # --- the loops -----------------------------------------------------------

    async def _supervise(self, popper: Popper) -> None:
        """Run one loop for as long as the worker runs, starting it again if it ever ends early."""
        failures = 0
        while self.running:
            try:
                await self._loop(popper)
            except Exception:
                self.restarts += 1
                self.log.failure("a {topic} worker loop stopped unexpectedly; starting it again", topic=self.topic.name)
                await self._sleep(redis_delay(failures))
                failures += 1

    async def _loop(self, popper: Popper) -> None:
        failures = 0
        while self.running:
            try:
                taken = await self._next(popper)
            except Exception as e:
                if not self.running:
                    return
                if failures == 0 and not explains(e):  # Redis away: said once for the process by redis_watch
                    self.log.warn("taking from {topic} failed, retrying: {error}", topic=self.topic.name, error=str(e))
                await self._sleep(redis_delay(failures))
                failures += 1
                continue
            failures = 0
            if taken is None:
                continue
            d = Deferred.fromCoroutine(self._process(taken))
            self._handling.add(d)
            try:
                await d
            finally:
                self._handling.discard(d)

    async def _next(self, popper: Popper) -> Taken | None:
        """The next message for this loop, begun (its run counted): taken at once, or after a parked pop."""
        store = self.runtime.store
        name = self.topic.name
        taken = await self._take(popper)
        if taken is not None:
            return taken
        if not self.running:
            return None
        d = popper.pop(store.keys(name), self.runtime.worker_id, POP_TIMEOUT)
        key = id(d)
        self._parked[key] = (popper, d)
        try:
            payload = await d
        finally:
            self._parked.pop(key, None)
        if payload is None or not self.running:
            return None  # a message moved while stopping was not begun: put back when the worker stops
        self.held.add(payload)
        try:
            return await store.begin(popper, name, payload)
        except BaseException:
            self.held.discard(payload)  # in flight, not begun: the sweep puts it back
            raise

    def _take(self, popper: Popper) -> Deferred[Taken | None]:
        """A ready message for this loop: one taken ahead, or one taken with those of the loops asking
        meanwhile (one round trip for them all, TAKE_MANY); None when nothing is ready. Taken messages are
        in this worker's in-flight list, their runs counted, before any loop gets one."""
        if self._ready:
            taken = self._ready.popleft()
            if not self._taking and not self._gathering and self._refill():
                self._start_taking(popper)  # this loop's connection is idle while it handles the message
            return succeed(taken)
        d: Deferred[Taken | None] = Deferred()
        self._wanting.append((popper, d))
        if not self._taking and not self._gathering:
            self._start_taking(popper)
        return d

    def _refill(self) -> int:
        """How many messages to take ahead now: none unless the queue was deep and half the stock is gone."""
        if not (self._deep and self.running) or len(self._ready) * 2 > self.prefetch:
            return 0
        return self.prefetch - len(self._ready)

    def _start_taking(self, popper: Popper) -> None:
        self._taking = True
        self._takes = Deferred.fromCoroutine(self._take_for_wanting(popper))

    async def _take_for_wanting(self, popper: Popper) -> None:
        """Take for the loops waiting (and ahead of them while the queue is deep) on one loop's connection,
        until none waits and the stock is full, or nothing is ready.

        Nothing ready: every loop waiting gets None (and parks a pop on its own connection); this stops
        first, so it never sends on a connection that has a pop parked.
        """
        store, name, worker = self.runtime.store, self.topic.name, self.runtime.worker_id
        try:
            while self._wanting or self._refill():
                want, self._wanting = self._wanting[:TAKE_BATCH], self._wanting[TAKE_BATCH:]
                ahead = self._refill()
                try:
                    batch = await store.take_many(popper, name, worker, len(want) + ahead)
                except Exception:
                    self._deep = False
                    failure = Failure()
                    waiting, self._wanting = want + self._wanting, []
                    for _, d in waiting:
                        d.errback(failure)
                    return
                self._deep = len(batch) == len(want) + ahead
                for taken in batch:
                    self.held.add(taken.payload)
                served, rest = want[:len(batch)], want[len(batch):]
                self._ready.extend(batch[len(want):])
                if rest:
                    rest, self._wanting = rest + self._wanting, []
                for (_, d), taken in zip(served, batch[:len(served)], strict=True):
                    d.callback(taken)
                for _, d in rest:
                    d.callback(None)
        finally:
            self._taking = False

    async def _sleep(self, seconds: float) -> None:
        """Wait on the clock; stopping the worker cuts the wait short."""
        d: Deferred[None] = deferLater(self.clock, seconds)
        self._sleeping.add(d)
        try:
            await d
        except CancelledError:
            pass
        finally:
            self._sleeping.discard(d)

    async def _process(self, taken: Taken) -> None:
        """Handle one message; nothing escapes (what cannot be recorded stays in flight for the sweep)."""
        try:
            await self._handle(taken)
        except Exception:
            self.log.failure("could not finish a {topic} message; it stays in flight and will be put back",
                             topic=self.topic.name)
        finally:
            self.held.discard(taken.payload)

    def handle(self, taken: Taken) -> Deferred[None]:
        """Handle one message already taken into this worker's in-flight list (pyrowire.testing uses it)."""
        return Deferred.fromCoroutine(self._process(taken))

    # --- one message -------------------------------------------------------------

    async def _handle(self, taken: Taken) -> None:
        rt = self.runtime
        topic = self.topic
        payload = taken.payload
        try:
            queued = envelope.decode(payload)
        except ValueError as e:
            await self._give_up(payload, None, taken.runs, f"malformed payload, not run: {e}")
            return
        message = queued.message
        sid = str(message.get("sid") or "")
        number = message.get("number")
        conversation = str(number) if topic.ordered and number is not None and queued.kind == "message" else None
        records = "statuses" if queued.kind == "status" else "complete"
        base = {"worker": rt.worker_id, "attempt": taken.runs, "received_at": queued.received_at}
        if taken.runs > topic.max_attempts + CRASH_RERUNS:
            # runs are counted before they start: the ones that never finished killed their worker
            await self._give_up(payload, message, taken.runs - 1,
                                f"the worker died while handling it ({taken.runs - 1} runs started, "
                                f"max_attempts {topic.max_attempts})", conversation)
            return
        previous = (await self._persist(lambda: rt.store.sent(topic.name, sid)) or {}) if taken.runs > 1 else {}
        exchange = rt.outbound.begin(sid, previous, taken.opted_out)
        before = taken.session or "{}"
        try:
            stored = json.loads(before)
        except ValueError:
            stored = {}
        conversing = queued.kind == "message"  # a status change belongs to no conversation
        if conversing:
            message["session"] = stored if isinstance(stored, dict) else {}
        started = self.clock.seconds()
        try:
            try:
                result = await self._run(message, exchange, queued.keyword, queued.kind)
                session = self._session_change(message["session"], before) if conversing else None
            finally:
                rt.outbound.end(sid)
            finished = self.clock.seconds()
            text = self._encode({"message": message, "result": message if result is None else result,
                                 "sids": list(exchange.sids), "started_at": started, "finished_at": finished,
                                 **base})
        except HandlingFailed as failed:
            dead = taken.runs >= topic.max_attempts
            fields: dict[str, Any] = {"topic": topic.name, "sid": sid, "attempt": taken.runs, "max": topic.max_attempts,
                      "outcome": "dead" if dead else "retry", "handling_failed": True}
            if failed.failure is not None:
                self.log.failure("handler for {topic} failed on {sid} (attempt {attempt} of {max})", failed.failure,
                                 **fields)
            else:
                self.log.error("handler for {topic} failed on {sid} (attempt {attempt} of {max}): {error}",
                               error=failed.text, **fields)
            record = {"message": message, "error": failed.text, "traceback": failed.trace}
            await self._failed(payload, record, base, exchange, started, dead, conversation)
            return
        if rt.metrics is not None:
            rt.metrics.handled(topic.name, "complete", finished - started)
        replies = exchange.settle()
        await self._complete(Finishing(payload, sid, text, records, topic.retention, False, conversation, session,
                                       replies))
        if logs.enabled(logging.INFO):
            self.log.info("{topic} {sid} complete in {duration:.3f}s", topic=topic.name, sid=sid,
                          outcome="complete", duration=finished - started)

    async def _run(self, message: dict[str, Any], exchange: Exchange, keyword: str | None = None,
                   kind: str = "message") -> Any:
        """Run the handler, then wait for the sends it started; HandlingFailed if the run did not complete.

        An opt-out keyword (STOP, START, HELP) is not the handler's: STOP and START go to the topic's
        opt-out hook, if it has one, and the record says what the keyword did.
        """
        result: Any = None
        try:
            if kind == "status":
                if self.on_status is not None:
                    result = await call_user(self.on_status, message)
            elif keyword is not None:
                result = {"keyword": keyword}
                if keyword in ("out", "in"):
                    message["opted_out"] = result["opted_out"] = keyword == "out"
                    if self.on_opt_out is not None:
                        await call_user(self.on_opt_out, message)
            else:
                result = await call_user(self.handler, message)
        except Exception as e:
            failure = Failure()
            raise HandlingFailed(traceback.format_exception_only(e)[-1].strip(), failure.getTraceback(),
                                 failure) from None
        left = await exchange.settle_sends()
        if left is not None:
            raise HandlingFailed(f"a send the handler did not wait for failed: {left.getErrorMessage()}",
                                 left.getTraceback(), left)
        return result

    @staticmethod
    def _encode(record: dict[str, Any]) -> str:
        try:
            return _RECORD_ENCODER.encode(record)
        except (TypeError, ValueError) as e:
            raise HandlingFailed(f"the handler's result cannot be stored as JSON: {e}",
                                 traceback.format_exc()) from None

    def _session_change(self, session: Any, before: str) -> SessionChange | None:
        """What to store of the session the handler left: nothing when unchanged, a delete when emptied."""
        problem = _unencodable(session, "message['session']") if isinstance(session, dict) else (
            "message['session'] is not a dict")
        if problem:
            raise HandlingFailed(f"the session cannot be stored as JSON: {problem}", "")
        after = _SESSION_ENCODER.encode(session)
        try:
            unchanged = after == _SESSION_ENCODER.encode(json.loads(before))
        except ValueError:
            unchanged = False
        if unchanged:
            return None
        return SessionChange(None if after == "{}" else after, self.topic.session_ttl)

    async def _failed(self, payload: str, record: dict[str, Any], base: dict[str, Any], exchange: Exchange,
                      started: float, dead: bool, conversation: str | None) -> None:
        rt, topic = self.runtime, self.topic
        finished = self.clock.seconds()
        if rt.metrics is not None:
            rt.metrics.handled(topic.name, "dead" if dead else "retry", finished - started)
        record.update(sids=list(exchange.sids), started_at=started, finished_at=finished, **base)
        try:
            text = _RECORD_ENCODER.encode(record)
        except (TypeError, ValueError):
            record["message"] = repr(record["message"])
            text = _RECORD_ENCODER.encode(record)
        sid = str(exchange.sid)
        if dead:
            replies = exchange.settle()
            await self._persist(partial(rt.store.finish, topic.name, rt.worker_id, payload, sid, text, "errors",
                                        topic.retention, True, conversation, replies=replies))
            return
        due = finished + handler_delay(int(base["attempt"]))
        await self._persist(partial(rt.store.retry, topic.name, rt.worker_id, payload, text, topic.retention, due))

    async def _give_up(self, payload: str, message: dict[str, Any] | None, runs: int, why: str,
                       conversation: str | None = None) -> None:
        """Dead-letter a message without running it, with a record saying why."""
        rt, topic = self.runtime, self.topic
        now = self.clock.seconds()
        sid = str(message.get("sid") or "") if message is not None else ""
        record: dict[str, Any] = {"message": message if message is not None else payload, "error": why, "traceback": "",
                  "sids": [], "worker": rt.worker_id, "attempt": runs, "started_at": now, "finished_at": now}
        self.log.error("{topic} {sid}: {why}; dead-lettered", topic=topic.name, sid=sid, why=why, outcome="dead",
                       handling_failed=True)
        if rt.metrics is not None:
            rt.metrics.handled(topic.name, "dead", 0.0)
        await self._persist(partial(rt.store.finish, topic.name, rt.worker_id, payload, sid,
                                    _RECORD_ENCODER.encode(record), "errors", topic.retention, True, conversation))

    async def _complete(self, f: Finishing) -> None:
        """Finish a completed message: with the others completing meanwhile when a finish is under way
        (group commit: one round trip for them all, and none waits when the way is clear)."""
        d: Deferred[bool | None] = Deferred()
        self._finishing.append((f, d))
        if not self._flushing:
            self._flushing = True
            Deferred.fromCoroutine(self._flush())
        if await d is None:  # Redis refused or was away: this one on its own, until it is done
            rt = self.runtime
            await self._persist(partial(rt.store.finish_one, self.topic.name, rt.worker_id, f))

    async def _flush(self) -> None:
        """Finish what waits, FINISH_BATCH a round trip, until nothing does."""
        store, topic, worker = self.runtime.store, self.topic.name, self.runtime.worker_id
        try:
            while self._finishing:
                batch, self._finishing = self._finishing[:FINISH_BATCH], self._finishing[FINISH_BATCH:]
                replies: list[bool | None]
                try:
                    if len(batch) == 1:
                        replies = [await store.finish_one(topic, worker, batch[0][0])]
                    else:
                        replies = await store.finish_many(topic, worker, [f for f, _ in batch])
                except Exception:
                    replies = [None] * len(batch)  # each is finished again by its own loop, which says why
                # the loops resumed here mostly ask for their next message at once: one take for them all
                self._gathering = True
                try:
                    for (_, d), reply in zip(batch, replies, strict=True):
                        d.callback(reply)
                finally:
                    self._gathering = False
                if self._wanting and not self._taking:
                    self._start_taking(self._wanting[0][0])
        finally:
            self._flushing = False

    async def _persist(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        """Run a Redis operation until it succeeds, backing off while Redis is away or refusing writes
        (OOM, READONLY during a failover); None if the worker stopped first."""
        failures = 0
        while True:
            try:
                return await operation()
            except (RedisUnavailable, RedisReplyError) as e:
                if not self.running:
                    self.log.warn("{topic}: Redis failed while stopping; message left in flight: {error}",
                                  topic=self.topic.name, error=str(e))
                    return None
                if failures == 0 and not explains(e):
                    self.log.warn("{topic}: Redis failed, retrying: {error}", topic=self.topic.name, error=str(e))
                await deferLater(self.clock, redis_delay(failures))
                failures += 1

    # --- stopping --------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # first the parked pops' connections, so that nothing more moves into this worker's in-flight list
        parked = list(self._parked.values())
        await defer.DeferredList([p.close() for p, _ in parked], consumeErrors=True)
        for d in list(self._sleeping):
            d.cancel()
        running = [d for d in self._loops if not d.called]
        if running:
            if self._handling:
                self.log.info("waiting up to {grace}s for {n} {topic} handlers", grace=self.grace,
                              n=len(self._handling), topic=self.topic.name)
            # wait on detached observers: the timeout must not cancel the handlers themselves
            waiting = defer.DeferredList([_observe(d) for d in running], consumeErrors=True)
            waiting.addTimeout(self.grace, self.clock)
            try:
                await waiting
            except defer.TimeoutError:
                self.log.warn("{n} {topic} handlers still running after {grace}s; their messages stay in flight",
                              n=len(self._handling), topic=self.topic.name, grace=self.grace)
        await self._untake()
        await defer.DeferredList([p.close() for p in self._poppers], consumeErrors=True)
        self._poppers = []

    async def _untake(self) -> None:
        """Put back the messages taken ahead that no loop started, their runs uncounted (or, if Redis fails
        here, left in flight for the put-back of a stopping worker, their runs counted)."""
        if self._takes is not None:
            await _observe(self._takes)
        ready, self._ready = list(self._ready), deque()
        if not ready:
            return
        payloads = [t.payload for t in ready]
        self.held.difference_update(payloads)
        try:
            n = await self.runtime.store.untake(self.topic.name, self.runtime.worker_id, payloads)
        except (RedisUnavailable, RedisReplyError) as e:
            self.log.warn("could not put back {n} {topic} messages taken ahead: {error}", n=len(payloads),
                          topic=self.topic.name, error=str(e))
            return
        self.log.info("put back {n} {topic} messages taken ahead and not started", n=n, topic=self.topic.name)


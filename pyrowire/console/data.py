"""What the console shows, read from Redis: bounded ranges and small counters only.

Every read here is one of: a list's length, the first ``N`` items of a list, a hash of at
most about sixty fields, one step of ``SSCAN``. Nothing scans the keyspace or reads a
whole list, so an open console costs Redis the same whatever the size of the queues.
The pages (:mod:`pyrowire.console.pages`) and the JSON API render these dicts as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime

from pyrowire import envelope
from pyrowire.settings import Topic
from pyrowire.store import TALLY_MINUTES, Store

RECENT = 30  # exchanges on a topic's page
ERRORS = 20  # errors on a topic's page
DEAD = 50  # dead letters listed on a topic's page
DEAD_SCAN = 1000  # how far into the dead letters an action looks for the one it names
WINDOW = 200  # records and sandbox sends read to build a conversation's thread
OUTBOX = 200  # sandbox sends read to find the bodies of recent replies


def _load(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _inbound(message: Any) -> dict[str, Any]:
    """The parts of an inbound message the console shows."""
    if not isinstance(message, dict):
        return {"sid": None, "number": None, "text": str(message), "media": []}
    media = message.get("media")
    urls = list(media.get("media", {})) if isinstance(media, dict) and isinstance(media.get("media"), dict) else []
    return {"sid": message.get("sid"), "number": message.get("number"), "text": message.get("message"),
            "media": urls}


class ConsoleData:
    """Reads one application's topics for the console."""

    def __init__(self, store: Store, topics: Mapping[str, Topic], clock: IReactorTime) -> None:
        self.store = store
        self.topics = topics
        self.clock = clock

    async def counts(self, topic: str) -> dict[str, int]:
        return {**await self.store.depths(topic), "scheduled": await self.store.scheduled(topic)}

    async def per_minute(self, topic: str) -> list[int]:
        """Messages finished in each of the last 60 minutes, oldest first (the current minute last)."""
        found = await self.store.handled_minutes(topic)
        now = int(self.clock.seconds() // 60)
        return [found.get(minute, 0) for minute in range(now - TALLY_MINUTES + 1, now + 1)]

    async def summary(self, topic: str) -> dict[str, Any]:
        minutes = await self.per_minute(topic)
        return {"name": topic, **await self.counts(topic), "per_minute": minutes, "last_hour": sum(minutes),
                "delivery": dict(sorted((await self.store.delivered(topic)).items()))}

    async def overview(self) -> dict[str, Any]:
        topics = [await self.summary(name) for name in sorted(self.topics)]
        return {"topics": topics, "now": self.clock.seconds()}

    # --- exchanges ---------------------------------------------------------------------

    async def _bodies(self, topic: str) -> dict[str, dict[str, Any]]:
        """The newest sandbox sends of ``topic`` by SID (their bodies; real sends keep none here)."""
        sends = {}
        for text in await self.store.lrange(self.store.keys(topic).outbox, 0, OUTBOX - 1):
            record = _load(text)
            if record is not None and isinstance(record.get("sid"), str):
                sends[record["sid"]] = record
        return sends

    async def _statuses(self, topic: str, sids: list[str]) -> dict[str, str | None]:
        if not sids:
            return {}
        found: list[str | None] = await gatherResults(
            [Deferred.fromCoroutine(self.store.delivery_status(topic, sid)) for sid in sids])
        return dict(zip(sids, found, strict=True))

    async def exchanges(self, topic: str, key: str, count: int, number: str | None = None,
                        bodies: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The newest ``count`` records of list ``key`` (complete or errors), as exchanges with their replies."""
        records = [r for r in map(_load, await self.store.lrange(key, 0, count - 1)) if r is not None]
        if number is not None:
            records = [r for r in records
                       if isinstance(r.get("message"), dict) and r["message"].get("number") == number]
        bodies = await self._bodies(topic) if bodies is None else bodies
        sids = [s for r in records for s in r.get("sids") or () if isinstance(s, str)]
        statuses = await self._statuses(topic, sids)
        found = []
        for record in records:
            message = record.get("message")
            exchange = _inbound(message)
            result = record.get("result")
            fallback = result.get("reply") if isinstance(result, dict) else None
            replies = []
            record_sids = [s for s in record.get("sids") or () if isinstance(s, str)]
            for sid in record_sids:
                sent = bodies.get(sid)
                body = sent.get("body") if sent else (fallback if len(record_sids) == 1 else None)
                replies.append({"sid": sid, "body": body, "status": statuses.get(sid),
                                "media": list(sent.get("media_urls") or ()) if sent else []})
            exchange.update(received_at=record.get("received_at"), finished_at=record.get("finished_at"),
                            attempt=record.get("attempt"), replies=replies,
                            keyword=(message or {}).get("keyword") if isinstance(message, dict) else None)
            if "error" in record:
                exchange.update(error=record.get("error"), traceback=record.get("traceback") or "")
            found.append(exchange)
        return found

    async def dead_letters(self, topic: str, count: int = DEAD) -> list[dict[str, Any]]:
        k = self.store.keys(topic)
        errors = {e["sid"]: e for e in reversed(await self.exchanges(topic, k.errors, WINDOW, bodies={}))}
        letters = []
        for payload in await self.store.lrange(k.dead, 0, count - 1):
            try:
                letter = _inbound(envelope.decode(payload).message)
            except ValueError:
                letter = {"sid": None, "number": None, "text": payload, "media": []}
            error = errors.get(letter["sid"])
            letter["error"] = error.get("error") if error else None
            letters.append(letter)
        return letters

    async def find_dead(self, topic: str, sid: str) -> str | None:
        """The dead letter of inbound ``sid`` (its payload), looking at the newest DEAD_SCAN letters."""
        for payload in await self.store.lrange(self.store.keys(topic).dead, 0, DEAD_SCAN - 1):
            try:
                if envelope.decode(payload).message.get("sid") == sid:
                    return payload
            except ValueError:
                continue
        return None

    async def topic(self, topic: str) -> dict[str, Any]:
        k = self.store.keys(topic)
        bodies = await self._bodies(topic)
        total, numbers = await self.store.opted_out_sample(topic)
        return {**await self.summary(topic),
                "exchanges": await self.exchanges(topic, k.complete, RECENT, bodies=bodies),
                "errors": await self.exchanges(topic, k.errors, ERRORS, bodies=bodies),
                "dead_letters": await self.dead_letters(topic),
                "opted_out": {"count": total, "numbers": numbers}}

    async def conversation(self, topic: str, number: str) -> dict[str, Any]:
        """One phone number's thread in ``topic``: its texts, the replies and errors, oldest first."""
        k = self.store.keys(topic)
        bodies = await self._bodies(topic)
        thread: list[dict[str, Any]] = []
        seen: set[str] = set()
        for key in (k.complete, k.errors):
            for exchange in await self.exchanges(topic, key, WINDOW, number, bodies):
                at = exchange["received_at"] or 0
                thread.append({"kind": "in", "text": exchange["text"], "at": at, "sid": exchange["sid"],
                               "media": exchange["media"]})
                for reply in exchange["replies"]:
                    seen.add(reply["sid"])
                    thread.append({"kind": "out", "text": reply["body"], "at": exchange["finished_at"] or at,
                                   "sid": reply["sid"], "status": reply["status"], "media": reply["media"]})
                if "error" in exchange:
                    thread.append({"kind": "error", "text": exchange["error"], "at": exchange["finished_at"] or at,
                                   "sid": exchange["sid"]})
        # sends that answer nothing (app.send), from the sandbox
        lone = [s for s in bodies.values() if s.get("to") == number and s["sid"] not in seen]
        statuses = await self._statuses(topic, [s["sid"] for s in lone])
        for sent in lone:
            thread.append({"kind": "out", "text": sent.get("body"), "at": sent.get("at") or 0, "sid": sent["sid"],
                           "status": statuses.get(sent["sid"]), "media": list(sent.get("media_urls") or ())})
        thread.sort(key=lambda item: (item["at"] or 0, item["kind"] != "in"))
        session = await self.store.session(topic, number)
        return {"topic": topic, "number": number, "thread": thread,
                "waiting": await self.store.llen(k.conversation(number)),
                "session": _load(session) if session else {},
                "opted_out": await self.store.opted_out(topic, number)}

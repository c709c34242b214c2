"""Every Redis key pyrowire uses, in one place.

All keys of a topic share the hash tag ``{topic}`` so that they live in one
Redis Cluster slot (the Lua scripts touch several of them at once), and all
start with the deployment's prefix so that several deployments can share a
Redis.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

DEDUPE_SECONDS = 24 * 60 * 60
# how long an outbound message's delivery status and events are kept after its last callback
DELIVERY_SECONDS = 7 * 24 * 60 * 60
# what a seen:<MessageSid> key holds: the message was accepted, or refused by a validator (v:<name>)
ACCEPTED = "a"
INVALID = "v:"
KEYWORD = "k:"  # an opt-out keyword answered: k:out, k:in or k:help
# what FINISH appends to a queued message's seen value when it ends (complete, or a dead letter); the last
# one appended tells (a dead letter re-queued and handled again has two)
FINISHED = "+"
FINISHED_DEAD = "-"
# how long the details of a message's replies are kept once it has finished (while it runs: as sent:<sid>)
REPLIES_SECONDS = 5 * 60
# how long a worker counts as alive after its last heartbeat
HEARTBEAT_TTL = 15


def read_seen(value: str) -> tuple[str, str]:
    """A ``seen:<MessageSid>`` value as (the answer given, how the message ended: ``""`` while it has not,
    else :data:`FINISHED` or :data:`FINISHED_DEAD`). A refused message (``v:<validator>``) is never queued,
    so never marked: its value is the answer whole, whatever the validator's name ends with."""
    if value.startswith(INVALID):
        return value, ""
    answer = value.rstrip(FINISHED + FINISHED_DEAD)
    return answer, value[len(answer):][-1:]


@functools.lru_cache(maxsize=1024)
def topic_keys(prefix: str, topic: str) -> TopicKeys:
    """The (shared, immutable) key names of ``topic`` under ``prefix``."""
    return TopicKeys(prefix, topic)


@dataclass(frozen=True)
class TopicKeys:
    """The key names of one topic under one prefix."""

    prefix: str
    topic: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.topic}}}"

    @property
    def queue(self) -> str:
        """List of queued messages: pushed on the left, popped on the right."""
        return f"{self.base}:queue"

    def inflight(self, worker: str) -> str:
        """List of the messages one worker process has taken and not yet finished."""
        return f"{self.base}:inflight:{worker}"

    @property
    def workers(self) -> str:
        """Set of worker ids that have taken messages of this topic."""
        return f"{self.base}:workers"

    def alive(self, worker: str) -> str:
        """A worker's heartbeat; it expires when the worker stops refreshing it."""
        return f"{self.base}:alive:{worker}"

    def seen(self, sid: str) -> str:
        """The answer given to an inbound MessageSid, kept for de-duplication."""
        return f"{self.base}:seen:{sid}"

    @property
    def complete(self) -> str:
        """List of completed exchanges, newest first, capped at the topic's retention."""
        return f"{self.base}:complete"

    @property
    def errors(self) -> str:
        """List of handler errors, newest first, capped at the topic's retention."""
        return f"{self.base}:errors"

    @property
    def dead(self) -> str:
        """List of messages that used up their attempts."""
        return f"{self.base}:dead"

    def sent(self, sid: str) -> str:
        """Hash of send index -> outbound SID for one inbound message, so a re-run sends nothing twice."""
        return f"{self.base}:sent:{sid}"

    def replies(self, sid: str) -> str:
        """Hash of send index -> the reply's details (JSON: sid, to, body, media) for one inbound message;
        kept as long as ``sent`` while the message runs, REPLIES_SECONDS once it has finished."""
        return f"{self.base}:replies:{sid}"

    @property
    def active(self) -> str:
        """Set of the conversations (sender numbers) with a message queued, in flight or scheduled."""
        return f"{self.base}:active"

    def conversation(self, number: str) -> str:
        """List of one conversation's messages waiting behind the one that is active, newest first."""
        return f"{self.base}:conv:{number}"

    @property
    def runs(self) -> str:
        """Hash of inbound MessageSid -> how many runs of its handler were started, counted before each."""
        return f"{self.base}:runs"

    @property
    def schedule(self) -> str:
        """Sorted set of messages waiting to be tried again, scored by when they are due."""
        return f"{self.base}:schedule"

    def session(self, number: str) -> str:
        """One conversation's session, as JSON, expiring session_ttl after its last change."""
        return f"{self.base}:session:{number}"

    def delivery(self, sid: str) -> str:
        """Hash of an outbound message's current delivery status (status, rank, error_code, to)."""
        return f"{self.base}:delivery:{sid}"

    def events(self, sid: str) -> str:
        """List of the status callbacks received for an outbound message, oldest first."""
        return f"{self.base}:events:{sid}"

    @property
    def statuses(self) -> str:
        """List of the on_status runs, newest first, capped at the topic's retention."""
        return f"{self.base}:statuses"

    @property
    def optout(self) -> str:
        """Set of the numbers that opted out of this topic (STOP, or Twilio's error 21610)."""
        return f"{self.base}:optout"

    @property
    def delivered(self) -> str:
        """Hash of delivery status -> how many outbound messages reached it (the console's totals)."""
        return f"{self.base}:delivered"

    @property
    def minutes(self) -> str:
        """Hash of minute (Unix seconds // 60) -> messages finished in it, over the last hour (the console's chart)."""
        return f"{self.base}:minutes"

    @property
    def outbox(self) -> str:
        """List of sandbox outbound messages, newest first, capped at the topic's retention."""
        return f"{self.base}:outbox"

"""What a running service lends the application: the store, the sender, the clock."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pyrowire.store import Store

if TYPE_CHECKING:
    from pyrowire.metrics import Metrics
    from pyrowire.outbound import Sender


def new_worker_id() -> str:
    """A name for this process that no other process, here or elsewhere, shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Exchange:
    """One inbound message while its handler runs: the sends it made, and those of earlier runs."""

    sid: str
    sids: list[str] = field(default_factory=list)
    previous: dict[int, str] = field(default_factory=dict)
    next_index: int = 0
    # sends not yet recorded in Redis, and the call that records them on the next reactor turn
    unsaved: dict[int, str] = field(default_factory=dict)
    saving: IDelayedCall | None = None

    def settle(self) -> None:
        """The message is finishing (its record drops the send records): nothing left to record."""
        if self.saving is not None and self.saving.active():
            self.saving.cancel()
        self.saving = None
        self.unsaved.clear()


@dataclass
class Runtime:
    """The live parts one App uses while a service of it runs."""

    store: Store
    sender: Sender
    clock: IReactorTime
    metrics: Metrics | None = None
    worker_id: str = field(default_factory=new_worker_id)
    # inbound MessageSid -> its exchange, while its handler runs
    exchanges: dict[str, Exchange] = field(default_factory=dict)

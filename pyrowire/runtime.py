"""What a running service lends the application: the store, the outbound side, the clock."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from pyrowire.outbound import Outbound, Sender
from pyrowire.store import Store

if TYPE_CHECKING:
    from pyrowire.metrics import Metrics


def new_worker_id() -> str:
    """A name for this process that no other process, here or elsewhere, shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Runtime:
    """The live parts one App uses while a service of it runs."""

    store: Store
    sender: Sender
    clock: IReactorTime
    metrics: Metrics | None = None
    worker_id: str = field(default_factory=new_worker_id)
    outbound: Outbound = field(init=False)

    def __post_init__(self) -> None:
        self.outbound = Outbound(self.sender, self.store, self.clock)

"""What a listening pyrowire process serves over HTTP, put together in one place.

``/queue/<topic>`` is the webhook (:mod:`pyrowire.webhook`, with ``/queue/<topic>/replies``,
:mod:`pyrowire.replies`), taken before any routing;
everything else (``/health``, ``/metrics``) is the Klein application of :mod:`pyrowire.ops`.
A process that does not serve the webhook (a worker listening for its health) answers
404 under ``/queue/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from pyrowire.console.access import Access
from pyrowire.metrics import Metrics
from pyrowire.ops import Operations
from pyrowire.site import Root
from pyrowire.status import StatusCallbacks
from pyrowire.store import Store
from pyrowire.webhook import Inbound, QueueResource, Webhook


def root(inbound: Inbound | None, store: Store, clock: IReactorTime, metrics: Metrics,
         public_url: str | None = None,
         workers: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
         console: Access | None = None, http: Any = None) -> IResource:
    """The root resource of a process's site; the webhook is served when ``inbound`` is given, and
    ``/health`` reports the worker loops ``workers`` describes. The console is served beside the
    webhook when ``console`` lets anybody see it; its phone posts with ``http`` (default: treq)."""
    leaves: dict[bytes, IResource] = {}
    if inbound is not None:
        webhook = Webhook(inbound, store, clock, public_url, metrics)
        leaves[b"queue"] = webhook.queue_resource()
        leaves[b"status"] = QueueResource(webhook, StatusCallbacks(webhook).answer)
        if console is not None and console.served:
            leaves[b"console"] = _console(inbound, store, clock, console, public_url, http)
    return Root(Operations(store, metrics, workers).resource(), leaves)


def _console(inbound: Inbound, store: Store, clock: IReactorTime, access: Access, public_url: str | None,
             http: Any) -> IResource:
    from pyrowire.console import Console
    from pyrowire.console.phone import Phone

    if http is None:
        import treq

        http = treq
    return Console(store, inbound.topics, clock, access, Phone(http, public_url)).resource()  # type: ignore[no-any-return]

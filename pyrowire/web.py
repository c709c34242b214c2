"""What a listening pyrowire process serves over HTTP, put together in one place.

``/queue/<topic>`` is the webhook (:mod:`pyrowire.webhook`, with ``/queue/<topic>/replies``,
:mod:`pyrowire.replies`), taken before any routing;
everything else (``/health``, ``/metrics``) is the Klein application of :mod:`pyrowire.ops`.
A process that does not serve the webhook (a worker listening for its health) answers
404 under ``/queue/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from pyrowire.metrics import Metrics
from pyrowire.ops import Operations
from pyrowire.site import Root
from pyrowire.status import StatusCallbacks
from pyrowire.store import Store
from pyrowire.webhook import Inbound, QueueResource, Webhook


def root(inbound: Inbound | None, store: Store, clock: IReactorTime, metrics: Metrics,
         public_url: str | None = None,
         workers: Callable[[], Mapping[str, Mapping[str, int]]] | None = None) -> IResource:
    """The root resource of a process's site; the webhook is served when ``inbound`` is given, and
    ``/health`` reports the worker loops ``workers`` describes."""
    leaves: dict[bytes, IResource] = {}
    if inbound is not None:
        webhook = Webhook(inbound, store, clock, public_url, metrics)
        leaves[b"queue"] = webhook.queue_resource()
        leaves[b"status"] = QueueResource(webhook, StatusCallbacks(webhook).answer)
    return Root(Operations(store, metrics, workers).resource(), leaves)

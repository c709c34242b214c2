"""The console (SPEC section 10): every topic's queues, exchanges, errors and dead letters in a
browser, a conversation as a thread, and a phone that texts a topic through the real webhook.

Served by the web role under ``/console/`` (:mod:`pyrowire.web`); who may see it is
:mod:`pyrowire.console.access`, what it reads :mod:`pyrowire.console.data`, its HTML
:mod:`pyrowire.console.pages`, its routes :mod:`pyrowire.console.resource`.
"""

from pyrowire.console.access import Access
from pyrowire.console.resource import Console

__all__ = ["Access", "Console"]

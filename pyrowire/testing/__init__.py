"""Testing helpers for pyrowire applications (and for pyrowire's own tests).

* :class:`AppTester` feeds messages through the real webhook and worker, in memory;
* :class:`MemoryStore` is pyrowire's queue with the very Lua scripts the daemon runs,
  executed in-process by fakeredis, on a ``task.Clock`` if you like;
* :mod:`pyrowire.testing.fake_twilio` is a local fake of Twilio's REST Messages API.

These need the ``testing`` extra (``fakeredis[lua]``).
"""

from pyrowire.testing.tester import AppTester, Fed, WebhookRefused, make_message

__all__ = ["AppTester", "Fed", "WebhookRefused", "make_message"]

"""pyrowire: Twilio SMS/MMS applications on Twisted.

``App`` is the application; the module-level functions act on one documented
default app, so a 2014-style application keeps working::

    pyrowire.configure(settings)

    @pyrowire.handler(topic="echo")
    def echo(message): ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

from pyrowire.app import App, NotRunning
from pyrowire.errors import BadRequest, ConfigurationError, PyrowireError, RedisUnavailable, TwilioError
from pyrowire.segments import segments
from pyrowire.version import __version__

__all__ = [
    "App",
    "BadRequest",
    "ConfigurationError",
    "NotRunning",
    "PyrowireError",
    "RedisUnavailable",
    "TwilioError",
    "__version__",
    "configure",
    "default_app",
    "handler",
    "mms",
    "properties",
    "run",
    "segments",
    "sms",
    "validator",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The app behind the module-level functions.
default_app = App()


def configure(settings: Any) -> None:
    """Configure the default app with a settings module or dict."""
    default_app.configure(settings)


def handler(topic: str) -> Callable[[F], F]:
    """Register a handler for ``topic`` on the default app."""
    return default_app.handler(topic)


def validator(name: str) -> Callable[[F], F]:
    """Register a validator called ``name`` on the default app (True means invalid)."""
    return default_app.validator(name)


def properties(topic: str) -> Mapping[str, Any]:
    """The ``properties`` of ``topic`` on the default app."""
    return default_app.properties(topic)


def sms(message: Mapping[str, Any] | None = None, key: str = "reply", **legacy: Any) -> Deferred[str | None]:
    """Send an SMS reply through the default app (``message_data=``/``data=`` still accepted)."""
    return default_app.sms(message, key, **legacy)


def mms(message: Mapping[str, Any] | None = None, media_url: str | Sequence[str] = (), include_text: bool = False,
        text_key: str = "reply", **legacy: Any) -> Deferred[str | None]:
    """Send an MMS reply through the default app (``message_data=``/``data=`` still accepted)."""
    return default_app.mms(message, media_url, include_text, text_key, **legacy)


def run() -> None:
    """Run the default app in the foreground (``ENV=dev python app.py``)."""
    default_app.run()

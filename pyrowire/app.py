"""App: the registry of an application's handlers and validators, and its way out to phones."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import IResource

from pyrowire import validators
from pyrowire.errors import ConfigurationError, PyrowireError
from pyrowire.settings import Settings, Topic, load_settings
from pyrowire.validators import Check

if TYPE_CHECKING:
    from pyrowire.runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])


def _message(*candidates: Mapping[str, Any] | None) -> Mapping[str, Any]:
    for candidate in candidates:
        if candidate is not None:
            return candidate
    raise TypeError("sms()/mms() need the message")


class NotRunning(PyrowireError):
    """app.sms / app.mms was called while no service of the app is running."""


class App:
    """One pyrowire application: its settings, handlers and validators."""

    log = Logger()

    def __init__(self, settings: Any = None) -> None:
        self._source = settings
        self._settings: Settings | None = None
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.validators: dict[str, Callable[..., Any]] = {}
        self._checks: dict[str, list[Check]] = {}
        self.runtime: Runtime | None = None

    # --- configuration -----------------------------------------------------

    def configure(self, settings: Any) -> None:
        """Use ``settings`` (a module or a dict with TOPICS and PROFILES)."""
        self._source = settings
        self._settings = None
        self._checks.clear()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            if self._source is None:
                raise ConfigurationError("settings", "the app has no settings: call configure(settings) first")
            self._settings = load_settings(self._source)
        return self._settings

    def use_settings(self, settings: Settings) -> None:
        """Serve with already-checked settings (the service applies environment overrides this way)."""
        self._settings = settings
        self._checks.clear()

    def handler(self, topic: str) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``topic``."""

        def register(f: F) -> F:
            self.handlers[topic] = f
            return f

        return register

    def validator(self, name: str) -> Callable[[F], F]:
        """Register the decorated function as validator ``name``; True from it means invalid."""

        def register(f: F) -> F:
            self.validators[name] = f
            self._checks.clear()
            return f

        return register

    def properties(self, topic: str) -> dict[str, Any]:
        """The free-form ``properties`` of ``topic``'s settings, as a plain dict (a copy, safe to change)."""
        return copy.deepcopy(dict(self._topic(topic).properties))

    def checks(self, topic: Topic) -> list[Check]:
        """The topic's validators in order, as (name, function, failure message)."""
        found = self._checks.get(topic.name)
        if found is None:
            found = []
            for name, failure_message in topic.validators.items():
                f = self.validators.get(name) or validators.builtin(name, topic)
                if f is None:
                    raise ConfigurationError(f"TOPICS[{topic.name!r}].validators", f"no validator called {name!r}")
                found.append((name, f, failure_message))
            self._checks[topic.name] = found
        return found

    def _topic(self, name: str) -> Topic:
        topic = self.settings.topics.get(name)
        if topic is None:
            raise ConfigurationError("topic", f"unknown topic {name!r}")
        return topic

    # --- sending -----------------------------------------------------------

    def sms(self, message: Mapping[str, Any] | None = None, key: str = "reply", *,
            message_data: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None) -> Deferred[str]:
        """Send ``message[key]`` to ``message['number']`` from the topic's number; fires with the SID.

        ``message_data=`` and ``data=`` are the 2014 pyrowire's names for ``message``.
        """
        message = _message(message, message_data, data)
        return self._track(message, Deferred.fromCoroutine(self._send(message, message[key], ())))

    def mms(self, message: Mapping[str, Any] | None = None, media_url: str | Sequence[str] = (),
            include_text: bool = False, text_key: str = "reply", *, message_data: Mapping[str, Any] | None = None,
            data: Mapping[str, Any] | None = None) -> Deferred[str]:
        """Send media (one URL or several) to ``message['number']``, with ``message[text_key]`` if asked."""
        message = _message(message, message_data, data)
        if not media_url:
            raise TypeError("mms() needs media_url")
        urls = [media_url] if isinstance(media_url, str) else list(media_url)
        body = message[text_key] if include_text else None
        return self._track(message, Deferred.fromCoroutine(self._send(message, body, urls)))

    async def _send(self, message: Mapping[str, Any], body: str | None, media_urls: Sequence[str]) -> str:
        runtime = self._running()
        return await runtime.outbound.reply(self._topic(message["topic"]), message, body, media_urls)

    def _track(self, message: Mapping[str, Any], d: Deferred[str]) -> Deferred[str]:
        """The handler running for ``message`` waits for this send before its exchange is recorded."""
        if self.runtime is not None:
            self.runtime.outbound.track(message, d)
        return d

    def _running(self) -> Runtime:
        if self.runtime is None:
            raise NotRunning("no pyrowire service of this app is running")
        return self.runtime

    # --- what the webhook needs (pyrowire.webhook.Inbound) -------------------

    @property
    def topics(self) -> Mapping[str, Topic]:
        """The configured topics, by name."""
        return self.settings.topics

    def send_accept(self, topic: Topic, message: Mapping[str, Any]) -> None:
        """Send the accept response through the REST API too (``send_on_accept``), in the background."""
        self._running().outbound.send_accept(topic, message)

    def requeue_dead(self, topic: str) -> Deferred[int]:
        """Move the topic's dead letters back to its queue (needs a running service); fires with how many."""

        async def requeue() -> int:
            runtime = self._running()
            conf = self._topic(topic)
            return await runtime.store.requeue_dead(topic, conf.ordered)

        return Deferred.fromCoroutine(requeue())

    # --- running -----------------------------------------------------------

    def service(self, role: str = "all", redis: str | None = None, listen: str | None = None,
                concurrency: int | None = None, topics: Sequence[str] | None = None,
                profile: str | None = None, grace: float | None = None, reactor: Any = None,
                environ: Mapping[str, str] | None = None) -> IService:
        """An IService running this app, to attach to your own Application or MultiService."""
        from pyrowire.service import build_service

        options = {"role": role, "redis": redis, "listen": listen, "concurrency": concurrency,
                   "topics": list(topics or ()), "profile": profile, "grace": grace}
        return build_service(self, options, os.environ if environ is None else environ, reactor)

    def resource(self, redis: str | None = None, profile: str | None = None, reactor: Any = None,
                 environ: Mapping[str, str] | None = None) -> IResource:
        """An IResource serving the webhook (``<mount>/queue/<topic>``), for your own twisted.web site."""
        from pyrowire.service import build_resource

        return build_resource(self, {"redis": redis, "profile": profile},
                              os.environ if environ is None else environ, reactor)

    def run(self, argv: Sequence[str] | None = None) -> None:
        """Run this app in the foreground with the profile from $ENV, as ``python app.py`` did."""
        from pyrowire.service import run_foreground

        run_foreground(self, os.environ)

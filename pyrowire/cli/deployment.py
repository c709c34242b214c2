"""Which Redis, key prefix and topics ``pyrowire dead`` works on: the app's, read as the daemon reads them.

``pyrowire dead`` imports the application (``--app``, else
``$PYROWIRE_APP``, else ``app`` in the working folder, as ``twistd pyrowire`` does) and
resolves its profile (``--profile``, else ``$ENV``, else ``dev``) and Redis (``--redis``,
else ``$REDIS_URL``, else the profile's, where ``embedded`` is the server a daemon runs in
this folder), so it finds the daemon's Redis and key prefix without being told. Without
an app in the folder it falls back to ``--redis``/``$REDIS_URL`` or this folder's
embedded server, and the key prefix ``pyrowire``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from pyrowire.errors import ConfigurationError, PyrowireError
from pyrowire.redis_store import RedisStore
from pyrowire.runconfig import RedisAddress, parse_redis_url, resolve

#: how long to wait for Redis before saying it cannot be reached
CONNECT_SECONDS = 1.0
DEFAULT_APP = "app"
DEFAULT_PREFIX = "pyrowire"
NAME_IT = "name the daemon's Redis with --redis URL or REDIS_URL"
SOCKET = os.path.join(".pyrowire", "redis", "redis.sock")


class UnknownTopic(PyrowireError):
    """A topic the app does not configure; the text names the ones it does."""


@dataclass(frozen=True)
class Deployment:
    """Where a daemon keeps its queues. ``topics`` is None when no app was found to say."""

    address: RedisAddress
    prefix: str
    topics: tuple[str, ...] | None = None
    embedded_in: str | None = None  # the folder whose embedded server ``address`` is
    unordered: tuple[str, ...] = ()  # the app's topics with ``ordered: False``

    def ordered(self, topic: str) -> bool:
        """Whether ``topic`` keeps its conversations in order (the default when no app says otherwise)."""
        return topic not in self.unordered

    def check_topic(self, topic: str) -> None:
        """Refuse a topic the app does not configure, naming the ones it does."""
        if self.topics is not None and topic not in self.topics:
            known = ", ".join(sorted(self.topics)) or "none"
            raise UnknownTopic(f"unknown topic {topic!r} (configured: {known})")


def _app_module_present(cwd: str) -> bool:
    return os.path.exists(os.path.join(cwd, f"{DEFAULT_APP}.py")) or os.path.isdir(os.path.join(cwd, DEFAULT_APP))


def _embedded(address: RedisAddress, cwd: str) -> tuple[RedisAddress, str | None]:
    if address.kind == "embedded":
        return RedisAddress("unix", path=os.path.join(cwd, SOCKET)), cwd
    return address, None


def locate(app: str | None, profile: str | None, redis: str | None, prefix: str | None,
           environ: Mapping[str, str], cwd: str) -> Deployment:
    """The deployment the options, the environment and the app's settings name; ConfigurationError if wrong."""
    spec = app or environ.get("PYROWIRE_APP")
    if spec is None and not _app_module_present(cwd):
        url = redis or environ.get("REDIS_URL") or "embedded"
        address, folder = _embedded(parse_redis_url(url, "--redis" if redis else "REDIS_URL"), cwd)
        return Deployment(address, prefix or DEFAULT_PREFIX, None, folder)
    from pyrowire.tap import load_app  # imports the daemon's modules: only when there is an app to read

    found = load_app(spec or DEFAULT_APP, "PYROWIRE_APP" if spec and not app else "--app")
    options = {"role": "web", "listen": "tcp:0", "redis": redis, "profile": profile,
               "topics": list(found.settings.topics)}
    config = resolve(options, environ, found.settings)
    address, folder = _embedded(config.redis, cwd)
    unordered = tuple(name for name, topic in config.settings.topics.items() if not topic.ordered)
    return Deployment(address, prefix or config.profile.key_prefix, tuple(config.settings.topics), folder,
                      unordered)


async def reachable(reactor: Any, address: RedisAddress, timeout: float = CONNECT_SECONDS) -> str | None:
    """None when something accepts a connection at ``address`` (at one of its Sentinels) within ``timeout``,
    else why not."""
    if address.kind == "sentinel":
        whys = [await reachable(reactor, RedisAddress("tcp", host=host, port=port), timeout)
                for host, port in address.sentinels]
        return None if None in whys else f"no Sentinel answers: {whys[0]}"
    if address.kind == "unix":
        endpoint: Any = UNIXClientEndpoint(reactor, address.path, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
    try:
        protocol = await endpoint.connect(Factory.forProtocol(Protocol))
    except Exception as e:
        return _reason(e)
    if protocol.transport is not None:
        protocol.transport.loseConnection()
    return None


def _reason(e: Exception) -> str:
    text = str(e).strip().rstrip(".")
    if "refused" in text.lower():
        return "connection refused"
    return text.split(": ", 1)[-1] if ": " in text else text or type(e).__name__


Probe = Callable[[Any, RedisAddress], "Deferred[str | None]"]


def _probe(reactor: Any, address: RedisAddress) -> Deferred[str | None]:
    return Deferred.fromCoroutine(reachable(reactor, address))


async def connect(reactor: Any, deployment: Deployment, factory: Callable[..., Any] = RedisStore,
                  probe: Probe | None = _probe) -> Any:
    """A started store on the deployment's Redis, or one ConfigurationError line saying how to name it."""
    address = deployment.address
    if deployment.embedded_in is not None and not os.path.exists(address.path):
        raise ConfigurationError("--redis", (
            f"no pyrowire with an embedded Redis is running in {deployment.embedded_in} (no {SOCKET}); "
            f"start it there with `twistd -n pyrowire --app app`, or {NAME_IT}"))
    if probe is not None:
        why = await probe(reactor, address)
        if why is not None:
            raise ConfigurationError("--redis", f"cannot reach Redis at {address.display()} ({why}); {NAME_IT}")
    store = factory(address, prefix=deployment.prefix)
    store.start()
    deadline = reactor.seconds() + CONNECT_SECONDS
    while not store.connected:
        if reactor.seconds() >= deadline:
            await store.stop()
            raise ConfigurationError("--redis", (
                f"cannot reach Redis at {address.display()} within {CONNECT_SECONDS:g} s; {NAME_IT}"))
        await deferLater(reactor, 0.05)
    return store

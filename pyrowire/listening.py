"""The webhook's port: bound before anything else starts, opened once the service is ready.

A listen description that does not parse, or an address already in use, must stop
start-up with one line before the embedded Redis, the workers or twistd's pid file
exist. So ``twistd pyrowire`` and ``pyrowire.run()`` bind while the service is built
(:func:`bind_now`), and a service started some other way binds first thing when it
starts (:func:`bind`). Until :meth:`Listener.open`, the bound socket accepts nothing:
connections wait in the kernel's backlog, so no request meets a half-started process.
"""

from __future__ import annotations

import errno
import re
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.python.failure import Failure

from pyrowire.errors import ConfigurationError

EXAMPLES = "tcp:8080, tcp:port=8080:interface=127.0.0.1 or unix:/run/pyrowire.sock"


def endpoint(reactor: Any, description: str, option: str = "--listen") -> IStreamServerEndpoint:
    """The server endpoint ``description`` names, or one ConfigurationError line saying what is wrong."""
    try:
        found: IStreamServerEndpoint = serverFromString(reactor, description)
    except Exception as e:  # ValueError, TypeError, OSError (a TLS key file): each parser raises its own
        raise ConfigurationError(
            option, f"{description!r} is not a usable endpoint description: {_parse_problem(e)} (e.g. {EXAMPLES})"
        ) from None
    return found


def _parse_problem(e: Exception) -> str:
    text = str(e)
    number = re.match(r"invalid literal for int\(\) with base 10: (.*)$", text)
    if number:
        return f"{number.group(1)} is not a number"
    kind = re.match(r"Unknown endpoint type: (.*)$", text)
    if kind:
        return f"unknown endpoint type {kind.group(1)}"
    keyword = re.search(r"unexpected keyword argument (.*)$", text)
    if keyword:
        return f"unknown parameter {keyword.group(1)}"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return text or type(e).__name__


def _listen_problem(description: str, failure: Failure) -> ConfigurationError:
    error = failure.value
    if isinstance(error, CannotListenError):
        where = f"{error.interface or '*'}:{error.port}" if error.port is not None else description
        socket_error = error.socketError
        code = getattr(socket_error, "errno", None)
        if code == errno.EADDRINUSE:
            why = "address already in use (another process listens there; choose another with --listen or PORT)"
        elif code == errno.EACCES:
            why = "permission denied (ports below 1024 need privileges)"
        else:
            why = str(getattr(socket_error, "strerror", None) or socket_error)
            why = why[:1].lower() + why[1:]
        return ConfigurationError("--listen", f"cannot listen on {where}: {why}")
    return ConfigurationError("--listen", f"cannot listen on {description}: {type(error).__name__}: {error}")


class Listener:
    """A bound listening port that accepts connections only once opened."""

    def __init__(self, port: IListeningPort) -> None:
        self.port = port
        self.opened = False
        _reading(port, False)

    def open(self) -> None:
        """Start accepting connections (those waiting in the backlog first)."""
        if not self.opened:
            self.opened = True
            _reading(self.port, True)

    def close(self) -> Deferred[None]:
        """Stop listening; fires once the socket is closed."""
        stopped: Deferred[None] | None = self.port.stopListening()
        return stopped if stopped is not None else succeed(None)


def _reading(port: IListeningPort, on: bool) -> None:
    # TCP, unix and TLS ports are file descriptors the reactor reads (accepts) from; others have no such switch
    switch = getattr(port, "startReading" if on else "stopReading", None)
    if switch is not None:
        switch()


async def bind(reactor: Any, description: str, factory: IProtocolFactory) -> Listener:
    """Bind ``description`` (waiting for endpoints that listen asynchronously); ConfigurationError if it cannot."""
    try:
        port = await endpoint(reactor, description).listen(factory)
    except ConfigurationError:
        raise
    except Exception:
        raise _listen_problem(description, Failure()) from None
    return Listener(port)


def start_binding(reactor: Any, description: str, factory: IProtocolFactory) -> Deferred[Listener]:
    """Start binding ``description``: TCP, unix and TLS endpoints bind at once, so a description that
    does not parse or an address that is taken raises its ConfigurationError here, before anything starts.
    """
    d = Deferred.fromCoroutine(bind(reactor, description, factory))
    if d.called and isinstance(d.result, Failure):
        failure = d.result
        d.addErrback(lambda _f: None)  # raised here, not left as an unhandled error
        failure.raiseException()
    return d

"""Call user code that may answer with a plain value, a Deferred or a coroutine."""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutine
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed


def is_pending(result: object) -> bool:
    """True when ``result`` must be awaited (a Deferred or a coroutine), False for a plain value."""
    return isinstance(result, Deferred) or iscoroutine(result)


def as_deferred(result: object) -> Deferred[Any]:
    """Wrap what user code returned in a Deferred: a Deferred as is, a coroutine run, else a fired one."""
    if isinstance(result, Deferred):
        return result
    if iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return succeed(result)


def call_user(f: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
    """Call ``f`` and always return a Deferred; an exception it raises becomes a failed Deferred."""
    try:
        result = f(*args, **kwargs)
    except BaseException:
        return fail()
    return as_deferred(result)

"""Reading Deferreds that have already fired, for tests driven by a Clock or an in-memory fake."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


def result_of(d: Deferred[Any]) -> Any:
    """The result of ``d``, which must have fired; its failure is raised."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure_of(d: Deferred[Any], kind: type[BaseException]) -> BaseException:
    """The exception of ``d``, which must have failed with ``kind``."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    assert isinstance(box[0], Failure), f"the Deferred succeeded with {box[0]!r}"
    assert isinstance(box[0].value, kind)
    return box[0].value

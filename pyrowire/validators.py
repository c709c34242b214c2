"""The built-in validators and the loop that runs a topic's checks.

As in the original pyrowire, a validator returns True when the message is INVALID.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from importlib.util import find_spec
from typing import Any

from pyrowire.calls import as_deferred, is_pending
from pyrowire.settings import Topic

Validator = Callable[[dict[str, Any]], Any]
# one of a topic's checks: (validator name, the validator, the message sent when it says invalid)
Check = tuple[str, Validator, str]

BUILTINS = ("profanity", "length", "parseable")

# a "word" character for whole-word matching: a letter or digit (so "_" separates words)
_NOT_AFTER_WORD = r"(?<![^\W_])"
_NOT_BEFORE_WORD = r"(?![^\W_])"


def _load_words() -> list[str]:
    # the list file only: importing better_profanity itself would cost the process ~1.6 MB
    spec = find_spec("better_profanity")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the better-profanity package is not installed")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "profanity_wordlist.txt")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return sorted({line.strip().lower() for line in text.splitlines() if line.strip()})


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex matching any of ``words``, built as a prefix tree so matching stays fast."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def emit(node: dict[str, Any]) -> str:
        branches = [
            (r"\s+" if char == " " else re.escape(char)) + emit(child)
            for char, child in sorted(node.items())
            if char
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


_PROFANITY = re.compile(_NOT_AFTER_WORD + _trie_pattern(_load_words()) + _NOT_BEFORE_WORD, re.IGNORECASE)

# the original pyrowire's character set
_PARSEABLE = re.compile(r"[A-Za-z0-9 \t\n\r!\"#$%&'()*,\-./:?@^]*")


def profanity(message: dict[str, Any]) -> bool:
    """Invalid when the text holds a whole word of better_profanity's list, in any case."""
    return _PROFANITY.search(message["message"]) is not None


@cache
def make_length(max_length: int) -> Callable[[dict[str, Any]], bool]:
    """A validator saying invalid when the text is blank or longer than ``max_length`` characters."""

    def length(message: dict[str, Any]) -> bool:
        text: str = message["message"]
        return len(text) > max_length or not text.strip()

    return length


def parseable(message: dict[str, Any]) -> bool:
    """Invalid when the text has a character outside the original's letters, digits and punctuation."""
    return _PARSEABLE.fullmatch(message["message"]) is None


def builtin(name: str, topic: Topic) -> Callable[[dict[str, Any]], bool] | None:
    """The built-in validator called ``name`` for ``topic``, or None when there is none."""
    if name == "profanity":
        return profanity
    if name == "length":
        return make_length(topic.max_message_length)
    if name == "parseable":
        return parseable
    return None


async def first_failure(
    checks: Sequence[tuple[str, Validator, str]], message: dict[str, Any]
) -> tuple[str, str] | None:
    """Run the checks in order; (name, failure message) of the first that says invalid, else None.

    A check may return a plain value, a Deferred or a coroutine; plain values are
    used at once, so a topic of synchronous checks finishes without waiting.
    """
    for name, check, failure in checks:
        result = check(message)
        if is_pending(result):
            result = await as_deferred(result)
        if result:
            return name, failure
    return None

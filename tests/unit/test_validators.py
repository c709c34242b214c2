"""Tests for pyrowire.validators: the built-ins and first_failure."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed

from pyrowire.settings import Topic
from pyrowire.validators import (
    BUILTINS,
    Validator,
    builtin,
    first_failure,
    make_length,
    parseable,
    profanity,
)
from tests.deferreds import failure_of, result_of


def msg(text: str) -> dict[str, Any]:
    """A minimal message dict carrying ``text``."""
    return {"message": text, "number": "+1", "sid": "SM1", "topic": "t"}


@pytest.mark.parametrize(
    "text",
    [
        "assessment",
        "Scunthorpe",
        "class",
        "grass",
        "Hello there, how are you?",
        "shell",
        "cocktail",
        "",
        "the bass is passable",
    ],
)
def test_clean_words_pass_profanity(text: str) -> None:
    """Words that merely contain a listed word are not profanity."""
    assert profanity(msg(text)) is False


@pytest.mark.parametrize(
    "text",
    [
        "fuck",
        "FUCK",
        "Shit!",
        "what the (fuck)?",
        "you...bitch.",
        "ass",
        "well,shit,",
        "x_shit_x",
        "Ass-Fucker",
    ],
)
def test_swear_words_fail_profanity(text: str) -> None:
    """Listed words fail in any case and surrounded by punctuation."""
    assert profanity(msg(text)) is True


def test_multi_word_entries_match_across_whitespace() -> None:
    """A listed phrase matches with any run of whitespace between its words."""
    assert profanity(msg("a blow  job")) is True
    assert profanity(msg("blow\njob")) is True


@pytest.mark.parametrize("max_length", [1, 5, 160])
def test_length_bounds(max_length: int) -> None:
    """Exactly max_length characters pass; one more, or a blank message, fails."""
    length = make_length(max_length)
    assert length(msg("a" * max_length)) is False
    assert length(msg("a" * (max_length + 1))) is True
    assert length(msg("")) is True
    assert length(msg(" \n\t ")) is True


def test_length_counts_characters_not_bytes() -> None:
    """A multi-byte character counts as one."""
    assert make_length(3)(msg("ééé")) is False


@pytest.mark.parametrize("text", ["Hello, world!", "a-b/c:d?e@f^g", "line\nbreak\r\n\ttab", "#$%&'()*\"", ""])
def test_parseable_accepts_the_original_set(text: str) -> None:
    """Letters, digits, whitespace and the original punctuation pass."""
    assert parseable(msg(text)) is False


@pytest.mark.parametrize("text", ["hi 😀", "café", "a+b", "a;b", "a=b", "[x]", "under_score", "\x00"])
def test_parseable_refuses_other_characters(text: str) -> None:
    """An emoji, an accented letter or punctuation outside the set fails."""
    assert parseable(msg(text)) is True


def test_builtin_lookup() -> None:
    """builtin() returns each built-in, length bound to the topic's maximum, and None otherwise."""
    topic = Topic(name="t", max_message_length=4)
    assert set(BUILTINS) == {"profanity", "length", "parseable"}
    assert builtin("profanity", topic) is profanity
    assert builtin("parseable", topic) is parseable
    length = builtin("length", topic)
    assert length is not None
    assert length(msg("abcd")) is False
    assert length(msg("abcde")) is True
    assert builtin("must_say_yo", topic) is None


def run_checks(checks: list[tuple[str, Validator, str]], text: str = "hi") -> Deferred[Any]:
    """Run first_failure on a message carrying ``text``, as a Deferred."""
    return Deferred.fromCoroutine(first_failure(checks, msg(text)))


def test_first_failure_no_checks() -> None:
    """No checks means no failure."""
    assert result_of(run_checks([])) is None


def test_first_failure_all_pass_synchronously() -> None:
    """Plain-value checks that all pass give None at once."""
    checks: list[tuple[str, Validator, str]] = [
        ("profanity", profanity, "p"),
        ("length", make_length(10), "l"),
    ]
    assert result_of(run_checks(checks)) is None


def test_first_failure_first_failing_check_wins() -> None:
    """The first check in order that says invalid is reported, and later ones are not run."""
    ran: list[str] = []

    def later(message: dict[str, Any]) -> bool:
        ran.append("later")
        return True

    checks: list[tuple[str, Validator, str]] = [
        ("ok", lambda m: False, "never"),
        ("length", make_length(1), "Too long."),
        ("later", later, "Later."),
    ]
    assert result_of(run_checks(checks)) == ("length", "Too long.")
    assert ran == []


def test_first_failure_truthy_values_count_as_invalid() -> None:
    """Any truthy answer means invalid, any falsy one valid."""
    checks: list[tuple[str, Validator, str]] = [
        ("zero", lambda m: 0, "z"),
        ("empty", lambda m: "", "e"),
        ("words", lambda m: "bad", "w"),
    ]
    assert result_of(run_checks(checks)) == ("words", "w")


def test_first_failure_async_validator() -> None:
    """An async def validator is awaited, including one waiting on a Deferred."""
    pending: Deferred[bool] = Deferred()

    async def must_say_yo(message: dict[str, Any]) -> bool:
        await pending
        return "yo" not in message["message"].lower()

    d = run_checks([("must_say_yo", must_say_yo, "Say yo.")], "hello")
    assert not d.called
    pending.callback(True)
    assert result_of(d) == ("must_say_yo", "Say yo.")


def test_first_failure_async_validator_passing() -> None:
    """An async def validator answering False lets the message through."""

    async def fine(message: dict[str, Any]) -> bool:
        return False

    assert result_of(run_checks([("fine", fine, "x")])) is None


def test_first_failure_deferred_validator() -> None:
    """A validator returning a Deferred is waited for."""
    pending: Deferred[bool] = Deferred()
    checks: list[tuple[str, Validator, str]] = [
        ("fired", lambda m: succeed(False), "f"),
        ("slow", lambda m: pending, "Slow says no."),
    ]
    d = run_checks(checks)
    assert not d.called
    pending.callback(True)
    assert result_of(d) == ("slow", "Slow says no.")


def test_first_failure_validator_exception_fails_the_result() -> None:
    """A validator that raises fails the whole check with its exception."""

    def boom(message: dict[str, Any]) -> bool:
        raise ValueError("broken validator")

    failure_of(run_checks([("boom", boom, "x")]), ValueError)


def test_first_failure_failed_deferred_validator_fails_the_result() -> None:
    """A validator whose Deferred fails fails the whole check."""
    pending: Deferred[bool] = Deferred()
    d = run_checks([("bad", lambda m: pending, "x")])
    pending.errback(RuntimeError("down"))
    failure_of(d, RuntimeError)

"""The exception hierarchy: every error pyrowire raises carries its data."""

from __future__ import annotations


class PyrowireError(Exception):
    """Base class of pyrowire's own errors."""


class ConfigurationError(PyrowireError):
    """A setting or option is wrong; ``option`` names it, ``why`` says what is wrong."""

    def __init__(self, option: str, why: str) -> None:
        super().__init__(option, why)
        self.option = option
        self.why = why

    def __str__(self) -> str:
        return f"{self.option}: {self.why}"


class BadRequest(PyrowireError):
    """A webhook request pyrowire refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(status, sentence)
        self.status = status
        self.sentence = sentence

    def __str__(self) -> str:
        return self.sentence


class TwilioError(PyrowireError):
    """Twilio refused or failed a REST call.

    ``code`` and ``more_info`` are Twilio's own (None when Twilio sent none),
    ``status`` the HTTP status (None when no answer came at all).
    """

    def __init__(
        self,
        code: int | None,
        message: str,
        status: int | None = None,
        more_info: str | None = None,
    ) -> None:
        super().__init__(code, message, status, more_info)
        self.code = code
        self.message = message
        self.status = status
        self.more_info = more_info

    @property
    def retryable(self) -> bool:
        """True when trying again later may succeed (no answer, 429 or 5xx)."""
        return self.status is None or self.status == 429 or self.status >= 500

    def __str__(self) -> str:
        code = f" {self.code}" if self.code is not None else ""
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"Twilio error{code}{status}: {self.message}"


class RedisUnavailable(PyrowireError):
    """Redis could not be reached, or did not answer in time."""


class RedisReplyError(PyrowireError):
    """Redis answered a command with an error (OOM, READONLY, WRONGTYPE, a script's error …)."""

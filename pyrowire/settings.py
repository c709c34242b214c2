"""TOPICS / PROFILES, as the 2014 pyrowire defined them, turned into frozen values.

``load_settings`` accepts a settings module or a dict of the same shape and
refuses a malformed one with a :class:`ConfigurationError` naming the key.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pyrowire.errors import ConfigurationError

DEFAULT_API_BASE = "https://api.twilio.com"
MAX_MESSAGE_LENGTH = 1600
DEFAULT_RETENTION = 10_000
DEFAULT_SESSION_TTL = 24 * 60 * 60
DEFAULT_ACCEPT = "Great, we'll get right back to you."
DEFAULT_ERROR = "It seems like an error has occurred...please try again later."

# Every key a settings file may use: a key outside these stops start-up with one line naming it
# (a typo would otherwise be ignored in silence). SPEC section 4 names some that are accepted
# before they do anything (console_password).
TOPIC_KEYS = frozenset({
    "send_on_accept", "accept_response", "error_response", "validators", "properties", "twilio",
    "max_message_length", "validate_signature", "status_callback", "max_attempts", "retention",
    "ordered", "session_ttl", "opt_out", "help_response",
    # the 2014 voice-call keys of its settings template: accepted, unused
    "call_timeout", "call_busy_response", "call_error_response",
})
TWILIO_KEYS = frozenset({"account_sid", "auth_token", "from_number", "messaging_service_sid", "sandbox", "api_base",
                         "mps"})
PROFILE_KEYS = frozenset({"debug", "log_level", "redis", "host", "port", "public_url", "key_prefix", "log_format",
                          "console_password"})
REDIS_KEYS = frozenset({"host", "port", "db", "password", "url"})


@dataclass(frozen=True)
class TwilioConfig:
    """A topic's Twilio credentials; the auth token never appears in a repr."""

    account_sid: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    sandbox: bool = True
    api_base: str = DEFAULT_API_BASE
    # segments a second the sender may send, shared by every process (None: not paced)
    mps: float | None = None

    @property
    def sender(self) -> str:
        """Whom Twilio paces: the from number, else the messaging service."""
        return self.from_number or self.messaging_service_sid or ""


@dataclass(frozen=True)
class Topic:
    """One application ("topic") served under ``/queue/<name>``."""

    name: str
    twilio: TwilioConfig = field(default_factory=TwilioConfig)
    send_on_accept: bool = False
    accept_response: str = DEFAULT_ACCEPT
    error_response: str = DEFAULT_ERROR
    # validator name -> the message answered when it says invalid, in order
    validators: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    properties: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    max_message_length: int = 160
    validate_signature: bool = False
    status_callback: str | None = None
    max_attempts: int = 1
    retention: int = DEFAULT_RETENTION
    # one sender's messages one at a time, in the order accepted (SPEC section 8)
    ordered: bool = True
    session_ttl: int = DEFAULT_SESSION_TTL
    # STOP/START/HELP keywords honoured (SPEC section 9); False treats them as ordinary texts
    opt_out: bool = True
    help_response: str = ""


@dataclass(frozen=True)
class RedisConfig:
    """Where Redis is: a URL, or host/port/db/password; the password is never shown."""

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    password: str | None = field(default=None, repr=False)
    url: str | None = field(default=None, repr=False)
    configured: bool = True


@dataclass(frozen=True)
class Profile:
    """One entry of PROFILES."""

    name: str
    debug: bool = False
    log_level: int = logging.INFO
    redis: RedisConfig = field(default_factory=RedisConfig)
    host: str = "localhost"
    port: int = 62023
    public_url: str | None = None
    key_prefix: str = "pyrowire"
    log_format: str | None = None
    # the console's HTTP Basic password (PYROWIRE_CONSOLE_PASSWORD overrides it); never in a repr
    console_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    """Every topic and profile of an application."""

    topics: Mapping[str, Topic]
    profiles: Mapping[str, Profile]

    def profile(self, name: str) -> Profile:
        """The profile called ``name``, matched case-insensitively."""
        for key, profile in self.profiles.items():
            if key.lower() == name.lower():
                return profile
        known = ", ".join(sorted(self.profiles)) or "none"
        raise ConfigurationError("--profile", f"unknown profile {name!r} (configured: {known})")


def _as_mapping(source: Any) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    return {name: getattr(source, name) for name in ("TOPICS", "PROFILES") if hasattr(source, name)}


def _get(d: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in d or d[key] is None:
        return default
    value = d[key]
    if kind is int and isinstance(value, bool):
        raise ConfigurationError(f"{path}.{key}", f"must be an integer, not {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigurationError(f"{path}.{key}", f"must be {names}, not {type(value).__name__}")
    return value


def check_keys(raw: Mapping[Any, Any], path: str, known: Iterable[str]) -> None:
    """Refuse the first key of ``raw`` that is not in ``known``, naming the nearest known one."""
    names = sorted(known)
    for key in raw:
        if key in names:
            continue
        name = key if isinstance(key, str) else repr(key)
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else f"known keys: {', '.join(names)}"
        raise ConfigurationError(f"{path}.{name}", f"unknown key ({hint})")


def _twilio(raw: Any, path: str) -> TwilioConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(path, "must be a dict")
    check_keys(raw, path, TWILIO_KEYS)
    mps = _get(raw, "mps", path, (int, float), None)
    if mps is not None and (isinstance(mps, bool) or mps <= 0):
        raise ConfigurationError(f"{path}.mps", f"must be a number of segments per second above 0, not {mps!r}")
    sid = _get(raw, "account_sid", path, str, None) or None
    token = _get(raw, "auth_token", path, str, None) or None
    from_number = _get(raw, "from_number", path, str, None) or None
    service = _get(raw, "messaging_service_sid", path, str, None) or None
    api_base = _get(raw, "api_base", path, str, DEFAULT_API_BASE).rstrip("/")
    if not api_base.startswith(("http://", "https://")):
        raise ConfigurationError(f"{path}.api_base", "must be an http:// or https:// URL")
    has_credentials = bool(sid and token)
    sandbox = bool(_get(raw, "sandbox", path, bool, not has_credentials))
    if not sandbox:
        if not has_credentials:
            raise ConfigurationError(path, "account_sid and auth_token are needed unless sandbox is true")
        if not (from_number or service):
            raise ConfigurationError(path, "from_number or messaging_service_sid is needed")
    return TwilioConfig(sid, token, from_number, service, sandbox, api_base, None if mps is None else float(mps))


def _topic(name: str, raw: Any) -> Topic:
    path = f"TOPICS[{name!r}]"
    if not isinstance(raw, Mapping):
        raise ConfigurationError(path, "must be a dict")
    check_keys(raw, path, TOPIC_KEYS)
    twilio = _twilio(raw.get("twilio"), f"{path}.twilio")
    validators = _get(raw, "validators", path, (Mapping, list, tuple), {})
    if isinstance(validators, (list, tuple)):
        validators = {str(v): "" for v in validators}
    for vname, vmessage in validators.items():
        if not isinstance(vname, str) or not isinstance(vmessage, str):
            raise ConfigurationError(f"{path}.validators", "must map validator names to messages")
    max_len = _get(raw, "max_message_length", path, int, 160)
    if not 1 <= max_len <= MAX_MESSAGE_LENGTH:
        raise ConfigurationError(
            f"{path}.max_message_length", f"must be between 1 and {MAX_MESSAGE_LENGTH}, not {max_len}"
        )
    max_attempts = _get(raw, "max_attempts", path, int, 1)
    if max_attempts < 1:
        raise ConfigurationError(f"{path}.max_attempts", "must be at least 1")
    retention = _get(raw, "retention", path, int, DEFAULT_RETENTION)
    if retention < 1:
        raise ConfigurationError(f"{path}.retention", "must be at least 1")
    session_ttl = _get(raw, "session_ttl", path, int, DEFAULT_SESSION_TTL)
    if session_ttl < 1:
        raise ConfigurationError(f"{path}.session_ttl", "must be at least 1 (seconds)")
    return Topic(
        name=name,
        twilio=twilio,
        send_on_accept=bool(_get(raw, "send_on_accept", path, bool, False)),
        accept_response=_get(raw, "accept_response", path, str, DEFAULT_ACCEPT),
        error_response=_get(raw, "error_response", path, str, DEFAULT_ERROR),
        validators=MappingProxyType(dict(validators)),
        properties=MappingProxyType(dict(_get(raw, "properties", path, Mapping, {}))),
        max_message_length=max_len,
        validate_signature=bool(_get(raw, "validate_signature", path, bool, twilio.auth_token is not None)),
        status_callback=_get(raw, "status_callback", path, str, None),
        max_attempts=max_attempts,
        retention=retention,
        ordered=bool(_get(raw, "ordered", path, bool, True)),
        session_ttl=session_ttl,
        opt_out=bool(_get(raw, "opt_out", path, bool, True)),
        help_response=_get(raw, "help_response", path, str, ""),
    )


def _redis(raw: Any, path: str) -> RedisConfig:
    if raw is None:
        return RedisConfig(configured=False)
    if isinstance(raw, str):
        return RedisConfig(url=raw)
    if not isinstance(raw, Mapping):
        raise ConfigurationError(path, "must be a dict or a URL")
    check_keys(raw, path, REDIS_KEYS)
    return RedisConfig(
        host=_get(raw, "host", path, str, "localhost"),
        port=_get(raw, "port", path, int, 6379),
        db=_get(raw, "db", path, int, 0),
        password=_get(raw, "password", path, str, None) or None,
        url=_get(raw, "url", path, str, None) or None,
    )


def _profile(name: str, raw: Any) -> Profile:
    path = f"PROFILES[{name!r}]"
    if not isinstance(raw, Mapping):
        raise ConfigurationError(path, "must be a dict")
    check_keys(raw, path, PROFILE_KEYS)
    port = _get(raw, "port", path, int, 62023)
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"{path}.port", f"must be a port number, not {port}")
    public_url = _get(raw, "public_url", path, str, None)
    if public_url is not None:
        if not public_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{path}.public_url", "must start with http:// or https://")
        public_url = public_url.rstrip("/")
    log_format = _get(raw, "log_format", path, str, None)
    if log_format not in (None, "text", "json"):
        raise ConfigurationError(f"{path}.log_format", "must be 'text' or 'json'")
    return Profile(
        name=name,
        debug=bool(_get(raw, "debug", path, bool, False)),
        log_level=_get(raw, "log_level", path, int, logging.INFO),
        redis=_redis(raw.get("redis"), f"{path}.redis"),
        host=_get(raw, "host", path, str, "localhost"),
        port=port,
        public_url=public_url,
        key_prefix=_get(raw, "key_prefix", path, str, "pyrowire"),
        log_format=log_format,
        console_password=_get(raw, "console_password", path, str, None) or None,
    )


def load_settings(source: Any) -> Settings:
    """Check and freeze a settings module or dict; a wrong key raises ConfigurationError."""
    if isinstance(source, Settings):
        return source
    raw = _as_mapping(source)
    topics = raw.get("TOPICS")
    if not isinstance(topics, Mapping) or not topics:
        raise ConfigurationError("TOPICS", "must be a dict with at least one topic")
    profiles = raw.get("PROFILES", {"dev": {"debug": True}})
    if not isinstance(profiles, Mapping) or not profiles:
        raise ConfigurationError("PROFILES", "must be a dict with at least one profile")
    for name in topics:
        if not isinstance(name, str) or not name or "/" in name or "{" in name or "}" in name:
            raise ConfigurationError("TOPICS", f"{name!r} is not a usable topic name")
    return Settings(
        topics=MappingProxyType({name: _topic(name, t) for name, t in topics.items()}),
        profiles=MappingProxyType({str(name): _profile(str(name), p) for name, p in profiles.items()}),
    )

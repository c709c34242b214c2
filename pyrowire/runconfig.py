"""What a process runs: command-line options beat the environment, which beats settings.

``resolve`` is a pure function of the options, the environment and the
settings; every wrong value becomes a :class:`ConfigurationError` naming the
option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from pyrowire.errors import ConfigurationError
from pyrowire.keys import HEARTBEAT_TTL
from pyrowire.settings import Profile, Settings

ROLES = ("all", "web", "worker")
DEFAULT_CONCURRENCY = 16
DEFAULT_GRACE = 25.0
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class RedisAddress:
    """Where to reach Redis. ``kind`` is tcp, tls, unix, sentinel or embedded.

    A sentinel address names the Sentinels (``sentinels``) and the ``service`` they watch;
    the primary is whichever server they say, asked again whenever it may have moved.
    """

    kind: str
    host: str = "localhost"
    port: int = 6379
    path: str = ""
    db: int = 0
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""

    def display(self) -> str:
        """The address for humans and logs, never with the password."""
        if self.kind == "sentinel":
            hosts = ",".join(_host_port(host, port) for host, port in self.sentinels)
            return f"redis+sentinel://{hosts}/{self.service}/{self.db}"
        if self.kind == "embedded":
            return "embedded"
        if self.kind == "unix":
            return f"unix://{self.path}"
        scheme = "rediss" if self.kind == "tls" else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str, option: str = "--redis") -> RedisAddress:
    """``redis://[[user]:password@]host:port/db``, ``rediss://…``, ``unix:///path[?db=N]``,
    ``redis+sentinel://[:password@]host:port[,host:port…]/service[/db]`` or ``embedded``."""
    if url == "embedded":
        return RedisAddress("embedded")
    if url.lower().startswith(SENTINEL_SCHEME + "://"):
        return parse_sentinel_url(url, option)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError(option, "not a valid Redis URL") from None
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError(option, "a unix:// URL needs a socket path")
        db = _db_from_query(parts.query, option)
        return RedisAddress("unix", path=parts.path, db=db, password=password, username=username)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(
            option,
            f"unsupported scheme {parts.scheme!r}: use redis://, rediss://, redis+sentinel://, unix:// or embedded",
        )
    db_text = parts.path.lstrip("/")
    if db_text:
        if not db_text.isdigit():
            raise ConfigurationError(option, f"database {db_text!r} is not a number")
        db = int(db_text)
    else:
        db = _db_from_query(parts.query, option)
    return RedisAddress(
        "tls" if parts.scheme == "rediss" else "tcp",
        host=parts.hostname or "localhost",
        port=port or 6379,
        db=db,
        password=password,
        username=username if username and username != "h" else None,
    )


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_sentinel_url(url: str, option: str = "--redis") -> RedisAddress:
    """``redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db]``: the Sentinels to ask
    (port 26379 when left out), the service they watch, and the primary's password and database."""
    rest = url[len(SENTINEL_SCHEME) + 3:]
    if "?" in rest or "#" in rest:
        raise ConfigurationError(option, "a redis+sentinel:// URL takes no query or fragment")
    authority, _, path = rest.partition("/")
    userinfo, _, hosts = authority.rpartition("@")
    username, _, password = userinfo.partition(":") if ":" in userinfo else ("", "", userinfo)
    sentinels = tuple(_sentinel(item.strip(), option) for item in hosts.split(","))
    segments = path.split("/")
    service = unquote(segments[0]) if segments[0] else ""
    if not service:
        raise ConfigurationError(option, "a redis+sentinel:// URL names its service: "
                                         "redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE[/DB]")
    if len(segments) > 2 and any(segments[2:]):
        raise ConfigurationError(option, "a redis+sentinel:// URL's path is /SERVICE or /SERVICE/DB")
    db_text = segments[1] if len(segments) > 1 else ""
    if db_text and not db_text.isdigit():
        raise ConfigurationError(option, f"database {db_text!r} is not a number")
    username = unquote(username)
    return RedisAddress(
        "sentinel", db=int(db_text or 0), password=unquote(password) or None,
        username=username if username and username != "h" else None, sentinels=sentinels, service=service,
    )


def _sentinel(item: str, option: str) -> tuple[str, int]:
    """One ``host[:port]`` of a sentinel URL (``[v6]:port`` for an IPv6 address)."""
    if item.startswith("["):
        host, bracket, port_text = item[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ConfigurationError(option, f"sentinel {item!r} is not HOST:PORT")
        port_text = port_text[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ConfigurationError(option, "a redis+sentinel:// URL needs at least one HOST:PORT, "
                                         "with no empty entry between its commas")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(option, f"sentinel {item!r}: port {port_text!r} is not a port number")
    return host, int(port_text)


def _db_from_query(query: str, option: str) -> int:
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if name == "db":
            if not value.isdigit():
                raise ConfigurationError(option, f"database {value!r} is not a number")
            return int(value)
    return 0


@dataclass(frozen=True)
class ProcessConfig:
    """Everything one process needs to know about what it runs."""

    settings: Settings
    profile: Profile
    role: str
    topics: tuple[str, ...]
    listen: str
    redis: RedisAddress
    concurrency: int
    grace: float
    # how long a worker counts as alive after a heartbeat; it beats, and looks for dead workers,
    # three times as often (PYROWIRE_HEARTBEAT_TTL, for tests and impatient deployments)
    heartbeat_ttl: int = HEARTBEAT_TTL
    # the console's password: PYROWIRE_CONSOLE_PASSWORD, else the profile's console_password
    console_password: str | None = field(default=None, repr=False)


def _first(*values: Any) -> Any:
    for value in values:
        if value not in (None, "", [], ()):
            return value
    return None


def _listen(options: Mapping[str, Any], environ: Mapping[str, str], profile: Profile) -> str:
    if options.get("listen"):
        return str(options["listen"])
    interface = profile.host.replace(":", "\\:")
    if environ.get("PORT"):
        port_text = environ["PORT"]
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigurationError("PORT", f"must be a port number, not {port_text!r}")
        return f"tcp:port={int(port_text)}:interface={interface}"
    if profile.port == 0:
        raise ConfigurationError(
            "--listen", f"profile {profile.name!r} has port 0, which means $PORT, and PORT is not set"
        )
    return f"tcp:port={profile.port}:interface={interface}"


def _redis(options: Mapping[str, Any], environ: Mapping[str, str], profile: Profile) -> RedisAddress:
    if options.get("redis"):
        return parse_redis_url(str(options["redis"]), "--redis")
    if environ.get("REDIS_URL"):
        return parse_redis_url(environ["REDIS_URL"], "REDIS_URL")
    config = profile.redis
    where = f"PROFILES[{profile.name!r}].redis"
    if config.url:
        return parse_redis_url(config.url, f"{where}.url")
    if not config.configured:
        if profile.name.lower() == "dev":
            return RedisAddress("embedded")
        return RedisAddress("tcp")
    return RedisAddress("tcp", host=config.host, port=config.port, db=config.db, password=config.password)


def _topics(
    options: Mapping[str, Any],
    environ: Mapping[str, str],
    settings: Settings,
    role: str,
    has_handler: Callable[[str], bool],
) -> tuple[str, ...]:
    chosen: Sequence[str] | None = options.get("topics") or None
    option = "--topic"
    if not chosen and environ.get("TOPIC"):
        chosen = [t.strip() for t in environ["TOPIC"].split(",") if t.strip()]
        option = "TOPIC"
    if not chosen:
        chosen = list(settings.topics)
    for name in chosen:
        if name not in settings.topics:
            known = ", ".join(sorted(settings.topics))
            raise ConfigurationError(option, f"unknown topic {name!r} (configured: {known})")
    if role != "web":
        for name in chosen:
            if not has_handler(name):
                raise ConfigurationError(
                    option, f"topic {name!r} has no handler (register one with @app.handler(topic={name!r}))"
                )
    return tuple(dict.fromkeys(chosen))


def _number(value: Any, option: str, kind: Callable[[Any], Any], minimum: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(option, f"must be a number, not {value!r}") from None
    if number < minimum:
        raise ConfigurationError(option, f"must be at least {minimum}, not {value!r}")
    return number


def resolve(
    options: Mapping[str, Any],
    environ: Mapping[str, str],
    settings: Settings,
    has_handler: Callable[[str], bool] = lambda _topic: True,
) -> ProcessConfig:
    """Combine options, environment and settings into one checked ProcessConfig."""
    try:
        profile = settings.profile(str(_first(options.get("profile"), environ.get("ENV"), "dev")))
    except ConfigurationError as e:
        if options.get("profile") or not environ.get("ENV"):
            raise
        raise ConfigurationError("ENV", e.why) from None
    role_option = "--role" if options.get("role") else "RUN"
    role = str(_first(options.get("role"), environ.get("RUN"), "all")).lower()
    if role not in ROLES:
        raise ConfigurationError(role_option, f"unknown role {role!r} (use all, web or worker)")
    api_base = environ.get("TWILIO_API_BASE")
    if api_base:
        if not api_base.startswith(("http://", "https://")):
            raise ConfigurationError("TWILIO_API_BASE", "must be an http:// or https:// URL")
        settings = dataclasses.replace(
            settings,
            topics={
                name: dataclasses.replace(t, twilio=dataclasses.replace(t.twilio, api_base=api_base.rstrip("/")))
                for name, t in settings.topics.items()
            },
        )
    if profile.public_url:
        # every send carries a StatusCallback: the topic's own, else this deployment's /status/<topic>
        base = profile.public_url.rstrip("/")
        settings = dataclasses.replace(settings, topics={
            name: t if t.status_callback else dataclasses.replace(t, status_callback=f"{base}/status/{name}")
            for name, t in settings.topics.items()
        })
    return ProcessConfig(
        settings=settings,
        profile=profile,
        role=role,
        topics=_topics(options, environ, settings, role, has_handler),
        listen=_listen(options, environ, profile) if role != "worker" else str(options.get("listen") or ""),
        redis=_redis(options, environ, profile),
        concurrency=_number(_first(options.get("concurrency"), DEFAULT_CONCURRENCY), "--concurrency", int, 1),
        grace=_number(_first(options.get("grace"), DEFAULT_GRACE), "--grace", float, 0),
        heartbeat_ttl=_number(_first(environ.get("PYROWIRE_HEARTBEAT_TTL"), HEARTBEAT_TTL),
                              "PYROWIRE_HEARTBEAT_TTL", int, 1),
        console_password=environ.get("PYROWIRE_CONSOLE_PASSWORD") or profile.console_password,
    )

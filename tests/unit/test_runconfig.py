"""runconfig.resolve: options beat the environment, which beats settings; Redis URL parsing."""

from __future__ import annotations

from typing import Any

import pytest

from pyrowire.errors import ConfigurationError
from pyrowire.keys import HEARTBEAT_TTL
from pyrowire.runconfig import DEFAULT_CONCURRENCY, DEFAULT_GRACE, RedisAddress, parse_redis_url, resolve
from pyrowire.settings import Settings, load_settings

SETTINGS = load_settings(
    {
        "TOPICS": {
            "echo": {},
            "shout": {"twilio": {"api_base": "https://eu.twilio.example"}},
            "web_only": {},
        },
        "PROFILES": {
            "dev": {"host": "localhost", "port": 62023},
            "Prod": {
                "host": "0.0.0.0",
                "port": 0,
                "redis": {"host": "redis.prod", "port": 6380, "db": 3, "password": "prod-pw"},
            },
            "staging": {"host": "::1", "port": 8000, "redis": {"url": "redis://:url-pw@stage:6379/4"}},
        },
    }
)
HANDLED = {"echo", "shout"}


def go(
    options: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    settings: Settings = SETTINGS,
) -> Any:
    return resolve(options or {}, environ or {}, settings, lambda t: t in HANDLED)


def refused(
    options: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        go(options, environ)
    return info.value


# --- precedence ----------------------------------------------------------------


def test_defaults_come_from_settings() -> None:
    """With no options or environment: profile dev, role all, listen from the profile, embedded Redis."""
    c = go({"topics": ["echo"]})
    assert c.profile.name == "dev"
    assert c.role == "all"
    assert c.listen == "tcp:port=62023:interface=localhost"
    assert c.redis == RedisAddress("embedded")
    assert (c.concurrency, c.grace) == (DEFAULT_CONCURRENCY, DEFAULT_GRACE)


def test_role_option_beats_run_env() -> None:
    """--role beats RUN, which beats the default all."""
    assert go({"role": "web"}, {"RUN": "worker"}).role == "web"
    assert go({}, {"RUN": "worker", "TOPIC": "echo"}).role == "worker"
    assert go({"role": "WEB"}).role == "web"


def test_topic_option_beats_topic_env_beats_settings() -> None:
    """--topic beats TOPIC (comma-separated), which beats every configured topic."""
    assert go({"role": "web", "topics": ["shout"]}, {"TOPIC": "echo"}).topics == ("shout",)
    assert go({"role": "web"}, {"TOPIC": "echo, shout"}).topics == ("echo", "shout")
    assert go({"role": "web"}).topics == ("echo", "shout", "web_only")


def test_repeated_topics_are_taken_once() -> None:
    """A topic named twice is served once, in first-seen order."""
    assert go({"topics": ["shout", "echo", "shout"]}).topics == ("shout", "echo")


def test_listen_option_beats_port_env_beats_profile() -> None:
    """--listen beats PORT, which beats the profile's host and port."""
    assert go({"role": "web", "listen": "tcp:9000"}, {"PORT": "5000"}).listen == "tcp:9000"
    assert go({"role": "web"}, {"PORT": "5000"}).listen == "tcp:port=5000:interface=localhost"
    assert go({"role": "web"}).listen == "tcp:port=62023:interface=localhost"


def test_port_env_becomes_a_listen_description_on_the_profile_host() -> None:
    """PORT (a bare number, as Heroku sets it) listens on the profile's interface, escaped for IPv6."""
    assert (
        go({"role": "web", "profile": "prod"}, {"PORT": "31337"}).listen == "tcp:port=31337:interface=0.0.0.0"
    )
    assert go({"role": "web", "profile": "staging"}).listen == "tcp:port=8000:interface=\\:\\:1"


@pytest.mark.parametrize("port", ["http", "0", "65536", "-1"])
def test_bad_port_env_is_refused_naming_port(port: str) -> None:
    """A PORT that is not a port number is refused naming PORT."""
    assert refused({"role": "web"}, {"PORT": port}).option == "PORT"


def test_port_zero_without_port_env_is_refused() -> None:
    """A profile with port 0 means $PORT; without PORT set, start-up is refused naming --listen."""
    e = refused({"role": "web", "profile": "prod"})
    assert e.option == "--listen"
    assert "PORT" in e.why


def test_worker_role_needs_no_listen() -> None:
    """A worker does not listen, so port 0 without PORT is fine for it."""
    assert go({"role": "worker", "profile": "prod", "topics": ["echo"]}).listen == ""


def test_redis_option_beats_env_beats_profile() -> None:
    """--redis beats REDIS_URL, which beats the profile's redis url, which beats host/port."""
    env = {"REDIS_URL": "redis://env-host:1/1"}
    assert go({"role": "web", "redis": "redis://opt-host:2/2"}, env).redis.host == "opt-host"
    assert go({"role": "web", "profile": "staging"}, env).redis.host == "env-host"
    staging = go({"role": "web", "profile": "staging"}).redis
    assert (staging.host, staging.db, staging.password) == ("stage", 4, "url-pw")
    prod = go({"role": "web", "profile": "prod"}, {"PORT": "1"}).redis
    assert prod == RedisAddress("tcp", host="redis.prod", port=6380, db=3, password="prod-pw")


def test_profile_option_beats_env_env() -> None:
    """--profile beats ENV, which beats the default dev; matching ignores case."""
    assert go({"role": "web", "profile": "staging"}, {"ENV": "dev"}).profile.name == "staging"
    assert go({"role": "web"}, {"ENV": "STAGING"}).profile.name == "staging"
    assert go({"role": "web", "profile": "prod"}, {"PORT": "1"}).profile.name == "Prod"


# --- refusals ----------------------------------------------------------------------


def test_unknown_role_names_the_option() -> None:
    """An unknown role is refused naming --role, or RUN when it came from the environment."""
    assert refused({"role": "both"}).option == "--role"
    assert refused({}, {"RUN": "both"}).option == "RUN"


def test_unknown_topic_names_the_option() -> None:
    """An unknown topic is refused naming --topic, or TOPIC when it came from the environment."""
    e = refused({"topics": ["nope"]})
    assert e.option == "--topic" and "nope" in e.why
    assert refused({}, {"TOPIC": "nope"}).option == "TOPIC"


def test_unknown_profile_names_the_option() -> None:
    """An unknown --profile is refused naming --profile."""
    assert refused({"profile": "qa"}).option == "--profile"


def test_unknown_profile_from_env_names_env() -> None:
    """An unknown profile taken from ENV is refused naming ENV, as RUN and TOPIC are named."""
    assert refused({}, {"ENV": "qa"}).option == "ENV"


def test_topic_without_handler_is_refused_unless_web() -> None:
    """A served topic with no handler is refused for roles all and worker, accepted for web."""
    e = refused({"topics": ["web_only"]})
    assert e.option == "--topic" and "handler" in e.why
    assert refused({"role": "worker"}).option == "--topic"
    assert go({"role": "web", "topics": ["web_only"]}).topics == ("web_only",)


@pytest.mark.parametrize(("option", "value"), [("concurrency", "many"), ("concurrency", 0), ("grace", -1)])
def test_bad_numbers_name_the_option(option: str, value: Any) -> None:
    """--concurrency below 1 or not a number, and a negative --grace, are refused naming the option."""
    assert refused({"topics": ["echo"], option: value}).option == f"--{option}"


def test_numbers_are_converted() -> None:
    """--concurrency and --grace given as strings are converted."""
    c = go({"topics": ["echo"], "concurrency": "32", "grace": "2.5"})
    assert (c.concurrency, c.grace) == (32, 2.5)


def test_heartbeat_ttl_defaults_to_fifteen_seconds_and_is_read_from_the_environment() -> None:
    """PYROWIRE_HEARTBEAT_TTL sets how long a worker counts as alive; without it, HEARTBEAT_TTL."""
    assert go({"topics": ["echo"]}).heartbeat_ttl == HEARTBEAT_TTL == 15
    assert go({"topics": ["echo"]}, {"PYROWIRE_HEARTBEAT_TTL": "2"}).heartbeat_ttl == 2


@pytest.mark.parametrize("value", ["0", "soon", "1.5"])
def test_a_bad_heartbeat_ttl_is_refused_naming_the_variable(value: str) -> None:
    """A heartbeat TTL that is not a whole number of seconds, at least 1, stops start-up naming the variable."""
    with pytest.raises(ConfigurationError) as caught:
        go({"topics": ["echo"]}, {"PYROWIRE_HEARTBEAT_TTL": value})
    assert caught.value.option == "PYROWIRE_HEARTBEAT_TTL"


# --- TWILIO_API_BASE -------------------------------------------------------------------


def test_twilio_api_base_env_overrides_every_topic() -> None:
    """TWILIO_API_BASE replaces every topic's api_base, trailing slash dropped."""
    c = go({"role": "web"}, {"TWILIO_API_BASE": "http://127.0.0.1:8999/"})
    assert {t.twilio.api_base for t in c.settings.topics.values()} == {"http://127.0.0.1:8999"}
    assert SETTINGS.topics["shout"].twilio.api_base == "https://eu.twilio.example"


def test_bad_twilio_api_base_names_it() -> None:
    """A TWILIO_API_BASE that is not http(s) is refused naming TWILIO_API_BASE."""
    assert refused({"role": "web"}, {"TWILIO_API_BASE": "localhost:8999"}).option == "TWILIO_API_BASE"


# --- Redis URLs ------------------------------------------------------------------------


def test_parse_redis_tcp_url() -> None:
    """redis://:password@host:port/db gives a tcp address with every part."""
    a = parse_redis_url("redis://:s3cret@cache.example:6380/5")
    assert a == RedisAddress("tcp", host="cache.example", port=6380, db=5, password="s3cret")


def test_parse_redis_defaults() -> None:
    """redis://host alone means port 6379, database 0, no password."""
    assert parse_redis_url("redis://cache") == RedisAddress("tcp", host="cache")


def test_parse_rediss_url() -> None:
    """rediss:// is TLS."""
    a = parse_redis_url("rediss://user:pw@secure.example:6390/1")
    assert (a.kind, a.host, a.port, a.db, a.username, a.password) == (
        "tls",
        "secure.example",
        6390,
        1,
        "user",
        "pw",
    )


def test_parse_heroku_style_user_h_is_dropped() -> None:
    """Heroku's placeholder user ``h`` is not sent as an ACL user name."""
    assert parse_redis_url("redis://h:pw@host:1/0").username is None


def test_parse_unix_url_with_db() -> None:
    """unix:///path?db=2 gives a unix socket address on database 2."""
    a = parse_redis_url("unix:///var/run/redis.sock?db=2")
    assert (a.kind, a.path, a.db) == ("unix", "/var/run/redis.sock", 2)


def test_parse_embedded() -> None:
    """``embedded`` asks for the private Redis-compatible server."""
    assert parse_redis_url("embedded").kind == "embedded"
    assert parse_redis_url("embedded").display() == "embedded"


@pytest.mark.parametrize(
    "url", ["http://host:1/0", "redis://host:port/0", "redis://host/zero", "unix://", "unix:///s?db=x"]
)
def test_bad_redis_urls_name_the_option(url: str) -> None:
    """A malformed Redis URL is refused naming the option it came from."""
    with pytest.raises(ConfigurationError) as info:
        parse_redis_url(url, "REDIS_URL")
    assert info.value.option == "REDIS_URL"


@pytest.mark.parametrize(
    "url", ["redis://:topsecret@h:1/0", "rediss://u:topsecret@h:1/0", "unix://:topsecret@/tmp/r.sock"]
)
def test_password_never_in_display_or_repr(url: str) -> None:
    """Neither display() nor repr() of an address shows its password."""
    a = parse_redis_url(url)
    assert a.password == "topsecret"
    assert "topsecret" not in a.display()
    assert "topsecret" not in repr(a)


def test_display_is_readable() -> None:
    """display() shows scheme, host, port and database for humans and logs."""
    assert parse_redis_url("rediss://:x@h:7/3").display() == "rediss://h:7/3"
    assert parse_redis_url("unix:///tmp/r.sock").display() == "unix:///tmp/r.sock"


def test_config_repr_hides_passwords() -> None:
    """A resolved ProcessConfig's repr shows no Redis password."""
    c = go({"role": "web", "profile": "prod", "redis": "redis://:opt-pw@h:1/0"}, {"PORT": "1"})
    assert "opt-pw" not in repr(c)
    assert "prod-pw" not in repr(c)


# --- Redis Sentinel URLs ------------------------------------------------------------------


def test_parse_sentinel_url() -> None:
    """redis+sentinel:// names the Sentinels, the service they watch, the primary's password and database."""
    a = parse_redis_url("redis+sentinel://:s3cret@s1.example:26380,s2.example:26381/mymaster/4")
    assert a == RedisAddress("sentinel", db=4, password="s3cret", sentinels=(("s1.example", 26380),
                                                                             ("s2.example", 26381)),
                             service="mymaster")


def test_parse_sentinel_url_defaults() -> None:
    """A Sentinel without a port is on 26379; without a database the primary's is 0; IPv6 goes in brackets."""
    a = parse_redis_url("redis+sentinel://s1,[::1]:5000/mymaster")
    assert (a.sentinels, a.service, a.db, a.password) == ((("s1", 26379), ("::1", 5000)), "mymaster", 0, None)
    assert a.display() == "redis+sentinel://s1:26379,[::1]:5000/mymaster/0"


def test_parse_sentinel_url_user_and_escaped_password() -> None:
    """An ACL user and a percent-escaped password reach the primary as written."""
    a = parse_redis_url("redis+sentinel://app:p%40ss%2Fw@s1:1/mymaster/")
    assert (a.username, a.password, a.db) == ("app", "p@ss/w", 0)


@pytest.mark.parametrize(("url", "why"), [
    ("redis+sentinel://s1:26379", "names its service"),
    ("redis+sentinel://s1:26379/", "names its service"),
    ("redis+sentinel:///mymaster", "at least one HOST:PORT"),
    ("redis+sentinel://s1,,s2/mymaster", "at least one HOST:PORT"),
    ("redis+sentinel://s1:port/mymaster", "port 'port' is not a port number"),
    ("redis+sentinel://s1:70000/mymaster", "port '70000' is not a port number"),
    ("redis+sentinel://[::1/mymaster", "is not HOST:PORT"),
    ("redis+sentinel://s1/mymaster/zero", "database 'zero' is not a number"),
    ("redis+sentinel://s1/mymaster/0/1", "path is /SERVICE or /SERVICE/DB"),
    ("redis+sentinel://s1/mymaster?db=1", "no query"),
])
def test_bad_sentinel_urls_say_what_is_wrong(url: str, why: str) -> None:
    """A malformed sentinel URL is refused with one sentence naming the option and the mistake."""
    with pytest.raises(ConfigurationError) as info:
        parse_redis_url(url, "REDIS_URL")
    assert info.value.option == "REDIS_URL"
    assert why in info.value.why


@pytest.mark.parametrize("url", ["redis+sentinel://:topsecret@s1:1/m/0", "redis+sentinel://u:topsecret@s1:1,s2/m",
                                 "redis+sentinel://:topsecret@s1:port/m", "redis+sentinel://:topsecret@/m"])
def test_sentinel_password_never_shown(url: str) -> None:
    """Neither display(), repr() nor the error about a malformed sentinel URL shows its password."""
    try:
        a = parse_redis_url(url)
    except ConfigurationError as e:
        assert "topsecret" not in str(e)
        return
    assert a.password == "topsecret"
    assert "topsecret" not in a.display()
    assert "topsecret" not in repr(a)


def test_sentinel_url_from_the_profile() -> None:
    """A profile's redis url may be a sentinel URL; --redis and REDIS_URL take them too."""
    url = "redis+sentinel://s1:26379/mymaster/2"
    topics = {"echo": {}}
    c = resolve({"role": "web"}, {}, load_settings({"TOPICS": topics, "PROFILES": {"dev": {"redis": {"url": url}}}}))
    assert (c.redis.kind, c.redis.service, c.redis.db) == ("sentinel", "mymaster", 2)
    assert resolve({"role": "web", "redis": url}, {}, load_settings({"TOPICS": topics})).redis.kind == "sentinel"
    assert resolve({"role": "web"}, {"REDIS_URL": url}, load_settings({"TOPICS": topics})).redis.kind == "sentinel"

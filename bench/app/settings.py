"""Settings of the benchmark app: signed webhooks, the three built-in validators, replies to the fake Twilio.

The ``bench`` profile takes its Redis from ``$BENCH_REDIS_URL``; ``TWILIO_API_BASE`` (set by
the benchmarks) points every topic at the fake Twilio REST API. Topics are ordered (one
conversation per sender, pyrowire's default) unless ``$BENCH_ORDERED`` is ``0``.
"""

import logging
import os

TWILIO = {
    "account_sid": "ACbench000000000000000000000000000",
    "auth_token": "bench-auth-token-0123456789",
    "from_number": "+15005550006",
}
VALIDATORS = {
    "profanity": "No profanity, please.",
    "length": "Your message was empty or too long.",
    "parseable": "Please only use alphanumeric and punctuation characters.",
}
RETENTION = 1_000_000  # every completed exchange is kept, so the benchmarks can count them


def topic(**extra):
    base = {
        "accept_response": "Thanks, we got it.",
        "error_response": "It seems like an error has occurred...please try again later.",
        "validators": dict(VALIDATORS),
        "twilio": dict(TWILIO),
        "max_message_length": 160,
        "retention": RETENTION,
        "ordered": os.environ.get("BENCH_ORDERED", "1") != "0",
    }
    base.update(extra)
    return base


TOPICS = {
    "ingest": topic(),
    "echo0": topic(),
    "echo50": topic(),
    "echoj": topic(),
    "latency": topic(),
}

PROFILES = {
    "bench": {
        "debug": False,
        "log_level": logging.WARNING,
        "redis": {"url": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")},
        "host": "127.0.0.1",
        "port": 0,
    },
}

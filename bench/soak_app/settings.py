"""Settings of the soak run: one topic keeping every record, replying through the fake Twilio."""

import os

TOPICS = {
    "soak": {
        "accept_response": "",
        "validators": {"length": "Too long.", "parseable": "Plain text only.", "profanity": "Nope."},
        "twilio": {
            "account_sid": "ACsoak0000000000000000000000000",
            "auth_token": "soak-auth-token-0123456789",
            "from_number": "+15005550006",
        },
        "retention": 1_000_000,
    },
}

PROFILES = {
    "soak": {"redis": {"url": os.environ["SOAK_REDIS_URL"]}, "host": "127.0.0.1", "port": 0},
}

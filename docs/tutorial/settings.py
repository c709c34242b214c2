"""Settings of the joke app: one topic, "joke", and two run profiles.

Without TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN in the environment the topic is
in the sandbox: replies are kept in Redis and logged instead of sent.
"""

import logging
import os

TOPICS = {
    "joke": {
        "send_on_accept": False,
        # empty: Twilio gets an empty <Response/>, so the joke is the only text the phone receives
        "accept_response": "",
        "error_response": "Sorry, my joke book is stuck. Try again later.",
        # checked in this order; the first that says "invalid" answers with its message
        "validators": {
            "length": "Text me something, but not a novel.",
            "profanity": "Keep it clean, please.",
            "asks_for_joke": "Text me 'joke' and I'll tell you one.",
        },
        "properties": {
            "jokes": [
                "I told my phone a joke. It didn't laugh, but it did vibrate.",
                "Why did the SMS break up with the email? Too many attachments.",
                "My Twilio number is so popular, even my voicemail has voicemail.",
                "Why was the queue so calm? It knew everything would be handled eventually.",
            ],
        },
        "twilio": {
            "account_sid": os.environ.get("TWILIO_ACCOUNT_SID", ""),
            "auth_token": os.environ.get("TWILIO_AUTH_TOKEN", ""),
            "from_number": os.environ.get("TWILIO_NUMBER", "+15005550006"),
            "sandbox": not os.environ.get("TWILIO_ACCOUNT_SID"),
        },
        "max_message_length": 160,
    },
}

PROFILES = {
    # no "redis" key: the dev profile starts an embedded Redis under ./.pyrowire
    "dev": {"debug": True, "log_level": logging.INFO, "host": "localhost", "port": 62023},
    # ENV=prod: Redis from $REDIS_URL, port 0 means $PORT
    "prod": {"debug": False, "log_level": logging.INFO, "host": "0.0.0.0", "port": 0},
}

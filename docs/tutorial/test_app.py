"""Tests of the joke app, in memory: no Redis, no network, no Twilio account.

Run them from this folder with:  pip install pytest pytest-twisted && pytest test_app.py
"""

import pytest_twisted
import settings
from app import app

from pyrowire.testing import AppTester

NUMBER = "+15551234567"
JOKES = settings.TOPICS["joke"]["properties"]["jokes"]


@pytest_twisted.ensureDeferred
async def test_a_joke_comes_back():
    """Asking for a joke is accepted and answered with one joke, texted to the sender."""
    async with AppTester(app) as tester:
        result = await tester.feed("joke", body="tell me a joke", number=NUMBER)
    assert result.accepted
    assert result.error is None
    assert len(result.sent) == 1
    assert result.sent[0]["to"] == NUMBER
    assert result.sent[0]["body"] in JOKES
    assert result.result["reply"] == result.sent[0]["body"]


@pytest_twisted.ensureDeferred
async def test_other_texts_are_refused():
    """A text that does not ask for a joke gets the validator's message in the TwiML, and nothing is sent."""
    async with AppTester(app) as tester:
        result = await tester.feed("joke", body="hello there", number=NUMBER)
    assert not result.accepted
    assert result.answer == "Text me 'joke' and I'll tell you one."
    assert result.sent == []

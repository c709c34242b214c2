"""pyrowire.testing under twisted.trial: test methods return Deferreds and the tester cleans up after itself.

pytest collects and runs these trial TestCases. They run on a task.Clock, as unit tests should; the one
test on the real reactor is skipped when pytest-twisted already runs that reactor in its greenlet (trial
cannot spin a reactor that is already running: pytest-dev/pytest-twisted#93), and runs under
``python -m twisted.trial tests.unit.test_testing_trial`` or when this file runs first.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock, deferLater
from twisted.trial import unittest

import pyrowire
from pyrowire.testing import AppTester, Fed

SETTINGS = {
    "TOPICS": {
        "echo": {"accept_response": "On it.", "validators": {"profanity": "No profanity, please."},
                 "twilio": {"account_sid": "AC" + "3" * 32, "auth_token": "trial-token",
                            "from_number": "+15005550006"}},
    },
    "PROFILES": {"dev": {}},
}


def make_app(clock: IReactorTime, delay: float = 2.0) -> pyrowire.App:
    app = pyrowire.App(SETTINGS)

    @app.handler(topic="echo")
    async def echo(message: dict[str, Any]) -> str:
        await deferLater(clock, delay)
        message["reply"] = message["message"].upper()
        return await app.sms(message)

    return app


class AppTesterTrialTests(unittest.TestCase):
    """AppTester in trial TestCases: Deferred-returning methods, successResultOf, addCleanup."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = make_app(self.clock)
        self.tester = AppTester(self.app, clock=self.clock)
        self.addCleanup(self.tester.close)

    def test_feed_returns_a_deferred_trial_waits_for(self) -> Deferred[None]:
        """A test method may return feed()'s Deferred, here fired by advancing the clock the handler waits on."""

        def check(fed: Fed) -> None:
            self.assertTrue(fed.accepted)
            self.assertEqual(fed.answer, "On it.")
            self.assertEqual([m["body"] for m in fed.sent], ["HELLO"])
            self.assertEqual(fed.result, fed.sent[0]["sid"])

        d = self.tester.feed("echo", body="hello").addCallback(check)
        self.clock.advance(2)
        return d

    def test_feed_waits_for_the_clock(self) -> None:
        """On a task.Clock the feed has no result until the clock passes the handler's wait."""
        d = self.tester.feed("echo", body="hi")
        self.assertNoResult(d)
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(d).sent[0]["body"], "HI")

    def test_coroutine_test_via_fromcoroutine(self) -> Deferred[None]:
        """An async test body wrapped in Deferred.fromCoroutine can await feed and validate."""

        async def go() -> None:
            refused = await self.tester.feed("echo", body="shit happens")
            self.assertFalse(refused.accepted)
            self.assertEqual(refused.answer, "No profanity, please.")
            self.assertEqual(refused.sent, [])
            self.assertIsNone(await self.tester.validate("echo", body="fine"))

        return Deferred.fromCoroutine(go())

    def test_raising_handler_leaves_no_logged_error(self) -> Deferred[None]:
        """A raising handler is reported as Fed.error, so trial finds no logged error to fail the test with."""

        @self.app.handler(topic="echo")
        def broken(message: dict[str, Any]) -> None:
            raise ValueError("nope")

        def check(fed: Fed) -> None:
            self.assertIsInstance(fed.error, ValueError)
            self.assertEqual(self.flushLoggedErrors(), [])

        return self.tester.feed("echo").addCallback(check)

    def test_cleanup_restores_the_app(self) -> None:
        """close() puts back the app's runtime, so the app is not left pointing at the tester."""
        self.assertIs(self.app.runtime, self.tester.runtime)
        self.tester.close()
        self.assertIsNone(self.app.runtime)

    def test_real_reactor(self) -> Deferred[None]:
        """With no clock, a handler waiting with deferLater on the real reactor is awaited while trial spins it."""
        if reactor.running:
            raise unittest.SkipTest("pytest-twisted runs the reactor already; trial cannot spin it (#93)")
        self.tester.close()
        app = make_app(reactor, delay=0.01)
        tester = AppTester(app)
        self.addCleanup(tester.close)

        def check(fed: Fed) -> None:
            self.assertEqual([m["body"] for m in fed.sent], ["REAL"])

        return tester.feed("echo", body="real").addCallback(check)
